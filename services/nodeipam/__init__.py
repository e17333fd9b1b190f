"""nodeipam: gives every Node its pod CIDR from the cluster CIDR."""
