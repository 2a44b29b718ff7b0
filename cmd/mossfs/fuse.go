package main

import "errors"

// mountFUSE serves the image at target through FUSE, content from objectsDir.
// Unless foreground, it returns once the mount is ready and the server keeps
// running in the background until unmount.
func mountFUSE(imagePath, objectsDir, target string, foreground bool) error {
	return errors.New("the FUSE driver is not built yet")
}
