output "server_id" {
  description = "ID of the current server; it changes with every rebuild."
  value       = hcloud_server.vps.id
}

output "server_name" {
  description = "Name of the server in Hetzner Cloud."
  value       = hcloud_server.vps.name
}

output "ipv4_address" {
  description = "The kept primary IPv4: DNS A records and haul's address point here."
  value       = hcloud_primary_ip.ipv4.ip_address
}

output "ipv6_network" {
  description = "The kept primary IPv6 /64; nixos/hosts/hetzner/site.nix's ipv6Address is an address in it."
  value       = hcloud_primary_ip.ipv6.ip_network
}

output "ipv6_address" {
  description = "The server's IPv6 address in that /64 (DNS AAAA records)."
  value       = hcloud_server.vps.ipv6_address
}

output "firewall_id" {
  description = "ID of the firewall attached to the server."
  value       = hcloud_firewall.vps.id
}
