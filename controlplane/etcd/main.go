// Command etcd is upstream etcd's own entry point (etcdmain), built from the Go module proxy
// at the version kube-apiserver of the pinned release is tested with.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
