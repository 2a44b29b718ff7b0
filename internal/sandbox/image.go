package sandbox

import "github.com/mossfs/mossfs/overlay"

func overlayMountImage(image string) (int, error) { return overlay.MountImage(image) }
