//go:build !amd64

package crc64iso

const canFold = false

func fold(state uint64, p []byte, k *[4]uint64) (lo, hi uint64) { panic("crc64iso: no folding here") }
