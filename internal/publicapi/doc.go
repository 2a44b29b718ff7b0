// Package publicapi holds no code, only a test of the module's public Go
// API: no exported identifier of a package that a program outside this
// module can import (any non-main package whose import path has no
// "internal" element) may name a type from an internal package, which that
// program could not name, build or inspect. New public packages are found by
// the test itself (go list), not listed here.
package publicapi
