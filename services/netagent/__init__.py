"""netagent: routes between nodes' pod CIDRs (host-gw, vxlan), like flannel."""
