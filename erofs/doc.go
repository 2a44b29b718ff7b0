// Package erofs reads and writes composefs EROFS metadata images.
//
// The writer (BuildImage, WriteImage) turns a tree.Node into an image that is
// byte-for-byte identical to what mkcomposefs 1.0.8 writes for the same
// composefs dump, so that fs-verity digests of images agree with ostree, bootc
// and composefs-rs. ParseDump reads the composefs-dump(5) text format into the
// same tree. Layout (which inode goes where, how large each record is) is
// computed by a pure function of the tree before any byte is written.
//
// The reader (Open) gives the tree back and serves the image as an fs.FS with
// the view an overlayfs mount would show.
//
// Regular files of a composefs image carry only metadata: their content lives
// in an object store addressed by fs-verity digest, which overlayfs uses as a
// data-only lower layer; the image's trusted.overlay.redirect and
// trusted.overlay.metacopy xattrs point at it.
package erofs
