"""The kubelet's CNI client: spec 1.0 exec protocol (``spec`` is pure, ``plugin`` runs plugins)."""
