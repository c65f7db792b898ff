terraform {
  required_providers {
    ferrofab = {
      source = "ferrofab/ferrofab"
    }
  }
}

provider "ferrofab" {
  endpoints = ["https://ctl-1.example:7443", "https://ctl-2.example:7443"]
  ca_file   = "/etc/ferrofab/ca.crt"
  cert_file = "/etc/ferrofab/admin.crt"
  key_file  = "/etc/ferrofab/admin.key"

  request_timeout = "30s"
}
