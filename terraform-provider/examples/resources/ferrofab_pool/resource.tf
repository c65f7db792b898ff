resource "ferrofab_pool" "fast" {
  name             = "fast-1"
  node             = "storage-1"
  path             = "/srv/ferrofab/fast"
  capacity         = "4TiB"
  overcommit_ratio = 2
  reclaim_policy   = "retain"
  labels = {
    tier = "fast"
  }
}
