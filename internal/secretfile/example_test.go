package secretfile_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/sluice-dev/sluice/internal/secretfile"
)

func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "secretfile")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "api-key")
	_ = os.WriteFile(path, []byte("sk-first\n"), 0o600)

	key, err := secretfile.Open(path, secretfile.WithInterval(0)) // look on every Get
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(key.Get())

	// Rotate by rename, as the kubelet and careful writers do.
	_ = os.WriteFile(path+".new", []byte("sk-second\n"), 0o600)
	_ = os.Rename(path+".new", path)
	fmt.Println(key.Get())
	// Output:
	// sk-first
	// sk-second
}
