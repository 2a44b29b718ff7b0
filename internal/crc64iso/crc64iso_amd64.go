package crc64iso

import "golang.org/x/sys/cpu"

var canFold = cpu.X86.HasPCLMULQDQ && cpu.X86.HasSSE2

// fold folds p (a multiple of 16 bytes, at least 64) into 128 bits, the
// CRC state xored into its first 8 bytes: lo and hi are 16 bytes of
// message with the same CRC from a zero state. k is constants.
//
//go:noescape
func fold(state uint64, p []byte, k *[4]uint64) (lo, hi uint64)
