// Package exporttest tests moss-compose export end to end, against GNU
// tar, skopeo, a loopback docker-registry and podman. It holds tests only.
package exporttest
