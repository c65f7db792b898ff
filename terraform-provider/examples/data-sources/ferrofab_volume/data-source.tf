data "ferrofab_volume" "archive" {
  name = "archive-2019"
}

output "archive_nqn" {
  value = data.ferrofab_volume.archive.subsystem_nqn
}
