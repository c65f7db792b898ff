resource "ferrofab_tenant" "neuro" {
  name           = "neuro"
  capacity_quota = "20TiB"
  volume_quota   = 100
  allowed_nodes  = ["ws-7", "ws-8"]
}
