resource "ferrofab_attachment" "scratch_ws7" {
  volume      = ferrofab_volume.scratch.name
  volume_uuid = ferrofab_volume.scratch.uuid # re-attach when the volume is replaced
  node        = "ws-7"
  mode        = "read-write"
}
