// Package sharetest proves that containers/storage shares a mossfs store:
// Debian's podman 4.3 and go.podman.io/storage (what podman 5 runs) pulling
// zstd:chunked images from a loopback registry with the store's sha256
// index as their ostree_repos fetch only what the store lacks, counted from
// the registry's access log; and containers/storage in use_composefs mode
// runs our mkcomposefs (moss-compose) as its composefs helper, the mounted
// images equal to their source trees and to the composefs label moss-oci
// export gave them. The images these pulls dedup and mount are pushed by
// moss-oci export (skopeo 1.9's zstd:chunked variant aside). It holds
// tests and benchmarks only.
package sharetest
