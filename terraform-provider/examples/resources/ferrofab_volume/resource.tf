resource "ferrofab_volume" "scratch" {
  name   = "scratch-1"
  tenant = ferrofab_tenant.neuro.name
  pool   = ferrofab_pool.fast.name
  size   = "500GiB"

  # Burst allocation: detached and deleted by the controller afterwards.
  expires_at = "2027-01-31T18:00:00Z"

  labels = {
    project = "imaging"
  }

  timeouts {
    create = "10m"
  }
}
