# The campus layout: two storage nodes with a pool each, one tenant for the
# lab, 20 home volumes spread over the pools, each attached to one of five
# workstations. Node names and pool paths are variables so the same layout
# applies to a test cluster (see terraform.tfvars.example).

terraform {
  required_providers {
    ferrofab = {
      source = "ferrofab/ferrofab"
    }
  }
}

# Endpoints and the admin certificate come from FERROFAB_ENDPOINTS,
# FERROFAB_CA_FILE, FERROFAB_CERT_FILE and FERROFAB_KEY_FILE.
provider "ferrofab" {}

variable "pools" {
  description = "Storage node name => directory on that node backing its pool."
  type        = map(string)
  default = {
    "storage-1" = "/srv/ferrofab/campus"
    "storage-2" = "/srv/ferrofab/campus"
  }
}

variable "pool_capacity" {
  type    = string
  default = "4TiB"
}

variable "workstations" {
  description = "Workstation node names; volume i is attached to workstation i mod N."
  type        = list(string)
  default     = ["ws-1", "ws-2", "ws-3", "ws-4", "ws-5"]
}

variable "volume_count" {
  type    = number
  default = 20
}

variable "volume_pools" {
  description = "Per-volume pool overrides: volume name => storage node (key of pools)."
  type        = map(string)
  default     = {}
}

variable "volume_workstations" {
  description = "Per-volume workstation overrides: volume name => workstation. Changing one moves that attachment (detached there, its host revoked on the storage node, then attached on the new workstation)."
  type        = map(string)
  default     = {}
}

variable "volume_size" {
  type    = string
  default = "100GiB"
}

variable "tenant_quota" {
  type    = string
  default = "8TiB"
}

locals {
  storage_nodes = sort(keys(var.pools))
  volumes = {
    for i in range(var.volume_count) : format("home-%03d", i + 1) => {
      pool = lookup(var.volume_pools, format("home-%03d", i + 1),
      local.storage_nodes[i % length(local.storage_nodes)])
      workstation = lookup(var.volume_workstations, format("home-%03d", i + 1),
      var.workstations[i % length(var.workstations)])
    }
  }
}

# Fails at plan time if a workstation has not enrolled yet.
data "ferrofab_nodes" "workstations" {
  role = "workstation"
}

resource "ferrofab_tenant" "lab" {
  name           = "campus-lab"
  capacity_quota = var.tenant_quota
  volume_quota   = 1000
  allowed_nodes  = var.workstations
}

resource "ferrofab_pool" "campus" {
  for_each         = var.pools
  name             = "campus-${each.key}"
  node             = each.key
  path             = each.value
  capacity         = var.pool_capacity
  overcommit_ratio = 4
  labels = {
    tier = "campus"
  }
}

resource "ferrofab_volume" "home" {
  for_each = local.volumes
  name     = each.key
  tenant   = ferrofab_tenant.lab.name
  pool     = ferrofab_pool.campus[each.value.pool].name
  size     = var.volume_size
  labels = {
    role = "home"
  }
}

resource "ferrofab_attachment" "home" {
  for_each = local.volumes
  volume      = ferrofab_volume.home[each.key].name
  volume_uuid = ferrofab_volume.home[each.key].uuid
  node        = each.value.workstation
}

output "workstations" {
  value = data.ferrofab_nodes.workstations.names
}

output "volume_nqns" {
  value = { for k, v in ferrofab_volume.home : k => v.subsystem_nqn }
}
