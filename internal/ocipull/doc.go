// Package ocipull pulls OCI images into a mossfs state root: it reads an image
// through package oci (containers/image), applies its layers in order into one
// tree (oci/layer), stores the contents in the CAS, fetching only what the
// store lacks where a layer has a table of contents (oci/chunked), and records
// the image apart from the OS transactions (internal/state's container
// records, the sha256 index). A refused pull leaves the store as it was.
//
// It is internal because its API is the state root's, which is not public;
// programs outside the module use package oci. Only moss-oci links it.
package ocipull
