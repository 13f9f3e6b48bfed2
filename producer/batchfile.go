package producer

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// StateDirEnv names the directory of batch manifests.
const StateDirEnv = "SLUICE_STATE_DIR"

// InlineIDs is the most custom_ids a manifest holds itself; a larger batch
// keeps them in a sidecar file, <id>.ids.jsonl, one JSON string a line.
const InlineIDs = 10000

// States of a batch (Batch.State).
const (
	// StateProducing: the batch was saved before its records were
	// produced; if it stays so, the producer stopped without a word
	// (killed). Client.Produced tells which ids were written.
	StateProducing = "producing"
	// StateSubmitted: every record was acknowledged (committed).
	StateSubmitted = "submitted"
	// StateIncomplete: producing failed half-way; some ids may not have
	// been written. Client.Produced tells which were.
	StateIncomplete = "incomplete"
)

// Batch is a submitted batch: which ids it holds and where on the output
// topic its results start. It is saved as a small JSON manifest so that
// another process (sluice collect --batch ID) can await the results.
//
// Its records carry ID in the sluice.batch header (HeaderBatch), and so do
// their results: results are matched on (ID, custom_id).
type Batch struct {
	ID string `json:"id"`
	// State is StateProducing, StateSubmitted or StateIncomplete; empty
	// (a manifest from before states) means submitted.
	State       string    `json:"state,omitempty"`
	InputTopic  string    `json:"input_topic"`
	OutputTopic string    `json:"output_topic"`
	SubmittedAt time.Time `json:"submitted_at"`
	// ResultStart is the end offset of every output partition, listed
	// before the first prompt was produced. nil reads every partition
	// from its beginning; so does a partition missing from the map.
	ResultStart map[int32]int64 `json:"result_start"`
	// InputStart is the end offset of every input partition, listed
	// before the first prompt was produced: the batch's records are at or
	// past it (see Client.Produced).
	InputStart map[int32]int64 `json:"input_start,omitempty"`
	// Count is len(CustomIDs).
	Count int `json:"count"`
	// CustomIDs are the ids submitted, in order. In a manifest they are
	// inline up to InlineIDs, else in IDsFile.
	CustomIDs []string `json:"custom_ids,omitempty"`
	// IDsFile is the sidecar's name, relative to the manifest, when the
	// ids are not inline.
	IDsFile string `json:"ids_file,omitempty"`
}

// DefaultStateDir is $SLUICE_STATE_DIR, else ~/.sluice/batches.
func DefaultStateDir() (string, error) {
	if d := os.Getenv(StateDirEnv); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("producer: no state directory: set %s: %w", StateDirEnv, err)
	}
	return filepath.Join(home, ".sluice", "batches"), nil
}

// ManifestPath is where the manifest of batch id lives in dir.
func ManifestPath(dir, id string) string { return filepath.Join(dir, id+".json") }

// Complete reports whether every record of b was acknowledged.
func (b *Batch) Complete() bool { return b.State == "" || b.State == StateSubmitted }

// Save writes b's manifest (and sidecar) to dir, replacing any earlier
// one, and returns the manifest's path. Files are written to a temporary
// name and renamed, so a reader never sees half a manifest.
func (b *Batch) Save(dir string) (string, error) {
	if !batchIDPattern.MatchString(b.ID) {
		return "", fmt.Errorf("producer: batch id %q is not a valid file name", b.ID)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("producer: state directory: %w", err)
	}
	m := *b
	m.Count = len(b.CustomIDs)
	m.IDsFile = ""
	if len(b.CustomIDs) > InlineIDs {
		m.IDsFile = b.ID + ".ids.jsonl"
		m.CustomIDs = nil
		err := writeAtomic(filepath.Join(dir, m.IDsFile), func(w *bufio.Writer) error {
			enc := json.NewEncoder(w)
			enc.SetEscapeHTML(false)
			for _, id := range b.CustomIDs {
				if err := enc.Encode(id); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return "", err
		}
	}
	path := ManifestPath(dir, b.ID)
	err := writeAtomic(path, func(w *bufio.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(&m)
	})
	return path, err
}

// RemoveBatch removes the manifest of batch id (and its sidecar) from
// dir; a missing one is not an error.
func RemoveBatch(dir, id string) error {
	if !batchIDPattern.MatchString(id) {
		return fmt.Errorf("producer: batch id %q is not a valid file name", id)
	}
	for _, path := range []string{ManifestPath(dir, id), filepath.Join(dir, id+".ids.jsonl")} {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("producer: remove batch %q: %w", id, err)
		}
	}
	return nil
}

// LoadBatch reads the manifest of batch id from dir, with its ids.
func LoadBatch(dir, id string) (*Batch, error) {
	if !batchIDPattern.MatchString(id) {
		return nil, fmt.Errorf("producer: batch id %q is not a valid file name", id)
	}
	data, err := os.ReadFile(ManifestPath(dir, id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("producer: no batch %q in %s (set %s or --state-dir to where it was submitted)", id, dir, StateDirEnv)
	}
	if err != nil {
		return nil, fmt.Errorf("producer: read batch manifest: %w", err)
	}
	var b Batch
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("producer: batch manifest %s: %w", ManifestPath(dir, id), err)
	}
	if b.IDsFile != "" {
		if b.CustomIDs, err = readIDsFile(filepath.Join(dir, filepath.Base(b.IDsFile))); err != nil {
			return nil, err
		}
	}
	if len(b.CustomIDs) != b.Count {
		return nil, fmt.Errorf("producer: batch %q lists %d ids, its manifest says %d", id, len(b.CustomIDs), b.Count)
	}
	return &b, nil
}

func readIDsFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("producer: batch ids: %w", err)
	}
	defer f.Close()
	var ids []string
	dec := json.NewDecoder(bufio.NewReader(f))
	for dec.More() {
		var id string
		if err := dec.Decode(&id); err != nil {
			return nil, fmt.Errorf("producer: batch ids %s: %w", path, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func writeAtomic(path string, fill func(*bufio.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("producer: %w", err)
	}
	w := bufio.NewWriter(f)
	err = fill(w)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("producer: write %s: %w", path, err)
	}
	return nil
}
