"""A real Kubernetes control plane (etcd + kube-apiserver on loopback) for tests and the lab."""
