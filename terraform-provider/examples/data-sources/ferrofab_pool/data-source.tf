data "ferrofab_pool" "fast" {
  name = "fast-1"
}

output "fast_free" {
  value = data.ferrofab_pool.fast.free_bytes
}
