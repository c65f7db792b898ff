data "ferrofab_nodes" "lab_workstations" {
  role = "workstation"
  labels = {
    room = "b204"
  }
}

output "lab_workstations" {
  value = data.ferrofab_nodes.lab_workstations.names
}
