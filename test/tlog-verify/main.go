// Command tlog-verify is a third-party verifier for Loki's audit transparency
// log. It uses only Go's golang.org/x/mod/sumdb/note and sumdb/tlog and the
// standard library, never the project's code, so it checks what the project
// publishes the way any tlog client would.
//
// Build (Debian: golang-go, golang-golang-x-mod-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o tlog-verify ./test/tlog-verify
//
// Commands:
//
//	tlog-verify ops FILE.json
//	    run a list of checks (open_note, checkpoint, check_record, check_tree,
//	    tiles, proof_file) and print one JSON result per check
//	tlog-verify gen-note NAME            (note text on stdin)
//	    make a key with note.GenerateKey and sign the text with note.Sign
//	tlog-verify tree N
//	    RFC 6962 hashes of records "record <i>\n" for i < N: tree hashes,
//	    inclusion and consistency proofs, tiles (vectors for the other side)
//	tlog-verify checkpoint BASE_URL VKEY
//	    fetch the checkpoint (bearer token in $TLOG_TOKEN), verify it, print it
//	tlog-verify http BASE_URL VKEY OLD_CHECKPOINT_FILE|- SAMPLES SEED [PROOF_FILE]
//	    read the checkpoint, tiles and entry bundles over HTTP (bearer token in
//	    $TLOG_TOKEN), verify the note, tlog.CheckRecord SAMPLES random entries,
//	    tlog.CheckTree from the checkpoint saved earlier (refusing a smaller or
//	    forked one), and the server's proof endpoints
//	tlog-verify proof FILE.tlog-proof VKEY [ENTRY_FILE]
//	    verify a C2SP tlog-proof offline
package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const tileHeight = 8

func die(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "tlog-verify: "+format+"\n", args...)
	os.Exit(2)
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func unb64(s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		die("bad base64 %q: %v", s, err)
	}
	return b
}

func hashes(list []string) []tlog.Hash {
	out := make([]tlog.Hash, len(list))
	for i, s := range list {
		h, err := tlog.ParseHash(s)
		if err != nil {
			die("bad hash %q", s)
		}
		out[i] = h
	}
	return out
}

// cosigVerifier verifies C2SP tlog-cosignature/v1 (type 0x04) signatures:
// u64 timestamp || Ed25519 over "cosignature/v1\ntime <t>\n" || note text.
// The note package knows only type 0x01, so this is the one verifier written
// here, with crypto/ed25519 from the standard library.
type cosigVerifier struct {
	name  string
	hash  uint32
	key   ed25519.PublicKey
	times map[string]uint64
}

func (v *cosigVerifier) Name() string    { return v.name }
func (v *cosigVerifier) KeyHash() uint32 { return v.hash }
func (v *cosigVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	t := binary.BigEndian.Uint64(sig)
	m := []byte(fmt.Sprintf("cosignature/v1\ntime %d\n", t))
	m = append(m, msg...)
	if !ed25519.Verify(v.key, m, sig[8:]) {
		return false
	}
	v.times[v.name] = t
	return true
}

// verifierFor makes a verifier from a vkey: note.NewVerifier for type 0x01,
// cosigVerifier for type 0x04.
func verifierFor(vkey string) (note.Verifier, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) == 3 {
		key, err := base64.StdEncoding.DecodeString(parts[2])
		if err == nil && len(key) == 33 && key[0] == 0x04 {
			h := sha256.Sum256(append([]byte(parts[0]+"\n"), key...))
			id, err := strconv.ParseUint(parts[1], 16, 32)
			if err != nil || len(parts[1]) != 8 || uint32(id) != binary.BigEndian.Uint32(h[:4]) {
				return nil, errors.New("invalid cosignature verifier hash")
			}
			return &cosigVerifier{name: parts[0], hash: uint32(id), key: ed25519.PublicKey(key[1:]), times: map[string]uint64{}}, nil
		}
	}
	return note.NewVerifier(vkey)
}

func verifiers(vkeys []string) (note.Verifiers, []*cosigVerifier, error) {
	var list []note.Verifier
	var cos []*cosigVerifier
	for _, k := range vkeys {
		v, err := verifierFor(k)
		if err != nil {
			return nil, nil, err
		}
		if c, ok := v.(*cosigVerifier); ok {
			cos = append(cos, c)
		}
		list = append(list, v)
	}
	return note.VerifierList(list...), cos, nil
}

type checkpoint struct {
	Origin string
	Tree   tlog.Tree
}

// parseCheckpoint parses a C2SP tlog-checkpoint note text.
func parseCheckpoint(text string) (checkpoint, error) {
	if !strings.HasSuffix(text, "\n") {
		return checkpoint{}, errors.New("malformed checkpoint")
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 || lines[0] == "" {
		return checkpoint{}, errors.New("malformed checkpoint")
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || n < 0 || lines[1] != strconv.FormatInt(n, 10) {
		return checkpoint{}, errors.New("malformed checkpoint size")
	}
	h, err := tlog.ParseHash(lines[2])
	if err != nil {
		return checkpoint{}, errors.New("malformed checkpoint hash")
	}
	for _, e := range lines[3:] {
		if e == "" {
			return checkpoint{}, errors.New("malformed checkpoint extension")
		}
	}
	return checkpoint{Origin: lines[0], Tree: tlog.Tree{N: n, Hash: h}}, nil
}

func openCheckpoint(msg []byte, vkeys []string) (checkpoint, *note.Note, map[string]uint64, error) {
	vs, cos, err := verifiers(vkeys)
	if err != nil {
		return checkpoint{}, nil, nil, err
	}
	n, err := note.Open(msg, vs)
	if err != nil {
		return checkpoint{}, nil, nil, err
	}
	c, err := parseCheckpoint(n.Text)
	times := map[string]uint64{}
	for _, v := range cos {
		for k, t := range v.times {
			times[k] = t
		}
	}
	return c, n, times, err
}

// mapTiles is a tlog.TileReader over tiles given by C2SP path (tile/<L>/<N>…),
// which is Go's tile path without the height element.
type mapTiles struct {
	tiles map[string][]byte
	fetch func(path string) ([]byte, error)
}

func c2spPath(t tlog.Tile) string {
	return "tile/" + strings.TrimPrefix(t.Path(), fmt.Sprintf("tile/%d/", t.H))
}

func (m *mapTiles) Height() int { return tileHeight }
func (m *mapTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		p := c2spPath(t)
		d, ok := m.tiles[p]
		if !ok && m.fetch != nil {
			var err error
			d, err = m.fetch(p)
			if err != nil {
				return nil, err
			}
			m.tiles[p] = d
			ok = true
		}
		if !ok {
			return nil, fmt.Errorf("missing tile %s", p)
		}
		out[i] = d
	}
	return out, nil
}
func (m *mapTiles) SaveTiles([]tlog.Tile, [][]byte) {}

// entryBundle splits a C2SP entry bundle (big-endian uint16 length-prefixed entries).
func entryBundle(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, errors.New("truncated entry bundle")
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			return nil, errors.New("truncated entry bundle")
		}
		out = append(out, b[2:2+n])
		b = b[2+n:]
	}
	return out, nil
}

func entriesPath(n int64, w int) string {
	t := tlog.Tile{H: tileHeight, L: -1, N: n, W: w}
	return "tile/entries/" + strings.TrimPrefix(t.Path(), fmt.Sprintf("tile/%d/data/", tileHeight))
}

// entryAt returns entry i of a tree of size n from its entry bundle.
func entryAt(tr *mapTiles, i, n int64) ([]byte, error) {
	bundle := i / (1 << tileHeight)
	w := 1 << tileHeight
	if (bundle+1)<<tileHeight > n {
		w = int(n - bundle<<tileHeight)
	}
	p := entriesPath(bundle, w)
	d, ok := tr.tiles[p]
	if !ok && tr.fetch != nil {
		var err error
		if d, err = tr.fetch(p); err != nil {
			return nil, err
		}
		tr.tiles[p] = d
		ok = true
	}
	if !ok {
		return nil, fmt.Errorf("missing entry bundle %s", p)
	}
	list, err := entryBundle(d)
	if err != nil {
		return nil, err
	}
	if len(list) != w {
		return nil, fmt.Errorf("entry bundle %s has %d entries, want %d", p, len(list), w)
	}
	return list[i-bundle<<tileHeight], nil
}

type op struct {
	Op       string            `json:"op"`
	Msg      string            `json:"msg"`
	VKeys    []string          `json:"vkeys"`
	Proof    []string          `json:"proof"`
	Size     int64             `json:"size"`
	Root     string            `json:"root"`
	Index    int64             `json:"index"`
	Data     string            `json:"data"`
	OldSize  int64             `json:"old_size"`
	OldRoot  string            `json:"old_root"`
	Tiles    map[string]string `json:"tiles"`
	Indexes  []int64           `json:"indexes"`
	File     string            `json:"file"`
	Entry    *string           `json:"entry"`
	TreeFrom int64             `json:"tree_from"`
}

type result map[string]interface{}

func errResult(err error) result { return result{"ok": false, "err": err.Error()} }

func runOp(o op) result {
	switch o.Op {
	case "open_note":
		vs, _, err := verifiers(o.VKeys)
		if err != nil {
			return errResult(err)
		}
		n, err := note.Open([]byte(o.Msg), vs)
		if err != nil {
			return errResult(err)
		}
		var names, unverified []string
		for _, s := range n.Sigs {
			names = append(names, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
		}
		for _, s := range n.UnverifiedSigs {
			unverified = append(unverified, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
		}
		return result{"ok": true, "text": n.Text, "sigs": names, "unverified": unverified}
	case "checkpoint":
		c, _, times, err := openCheckpoint([]byte(o.Msg), o.VKeys)
		if err != nil {
			return errResult(err)
		}
		return result{"ok": true, "origin": c.Origin, "size": c.Tree.N, "root": c.Tree.Hash.String(), "cosignature_times": times}
	case "check_record":
		err := tlog.CheckRecord(hashes(o.Proof), o.Size, hashes([]string{o.Root})[0], o.Index, tlog.RecordHash(unb64(o.Data)))
		if err != nil {
			return errResult(err)
		}
		return result{"ok": true}
	case "check_tree":
		err := tlog.CheckTree(hashes(o.Proof), o.Size, hashes([]string{o.Root})[0], o.OldSize, hashes([]string{o.OldRoot})[0])
		if err != nil {
			return errResult(err)
		}
		return result{"ok": true}
	case "tiles":
		tiles := map[string][]byte{}
		for p, d := range o.Tiles {
			tiles[p] = unb64(d)
		}
		tree := tlog.Tree{N: o.Size, Hash: hashes([]string{o.Root})[0]}
		return checkTiles(&mapTiles{tiles: tiles}, tree, o.Indexes, o.TreeFrom, nil)
	case "proof_file":
		var entry []byte
		if o.Entry != nil {
			entry = unb64(*o.Entry)
		}
		r, err := checkProofFile([]byte(o.File), o.VKeys, entry)
		if err != nil {
			return errResult(err)
		}
		return r
	}
	die("unknown op %q", o.Op)
	return nil
}

// checkTiles authenticates tiles against the tree (tlog.TileHashReader checks
// every tile it reads against the tree hash), recomputes the tree hash, proves
// and checks each listed entry from its entry bundle, and proves the tree
// consistent with its prefix of size treeFrom (if > 0, with hash fromHash).
func checkTiles(tr *mapTiles, tree tlog.Tree, indexes []int64, treeFrom int64, fromHash *tlog.Hash) result {
	thr := tlog.TileHashReader(tree, tr)
	th, err := tlog.TreeHash(tree.N, thr)
	if err != nil {
		return errResult(err)
	}
	if th != tree.Hash {
		return errResult(errors.New("tree hash from tiles differs from the checkpoint"))
	}
	for _, i := range indexes {
		data, err := entryAt(tr, i, tree.N)
		if err != nil {
			return errResult(err)
		}
		p, err := tlog.ProveRecord(tree.N, i, thr)
		if err != nil {
			return errResult(err)
		}
		if err := tlog.CheckRecord(p, tree.N, tree.Hash, i, tlog.RecordHash(data)); err != nil {
			return errResult(fmt.Errorf("entry %d: %v", i, err))
		}
	}
	r := result{"ok": true, "checked": len(indexes)}
	if treeFrom > 0 {
		p, err := tlog.ProveTree(tree.N, treeFrom, thr)
		if err != nil {
			return errResult(err)
		}
		var old tlog.Hash
		if fromHash != nil {
			old = *fromHash
		} else if old, err = tlog.TreeHash(treeFrom, thr); err != nil {
			return errResult(err)
		}
		if err := tlog.CheckTree(p, tree.N, tree.Hash, treeFrom, old); err != nil {
			return errResult(fmt.Errorf("consistency %d -> %d: %v", treeFrom, tree.N, err))
		}
		r["consistent_from"] = treeFrom
	}
	return r
}

// checkProofFile verifies a C2SP tlog-proof: the checkpoint note, then the
// inclusion proof of the entry (given, or the extra data) at the index.
func checkProofFile(file []byte, vkeys []string, entry []byte) (result, error) {
	text := string(file)
	lines := strings.Split(text, "\n")
	if len(lines) < 4 || lines[0] != "c2sp.org/tlog-proof@v1" {
		return nil, errors.New("not a c2sp.org/tlog-proof@v1 file")
	}
	i := 1
	var extra []byte
	if strings.HasPrefix(lines[i], "extra ") {
		var err error
		if extra, err = base64.StdEncoding.DecodeString(strings.TrimPrefix(lines[i], "extra ")); err != nil {
			return nil, errors.New("bad extra data")
		}
		i++
	}
	if !strings.HasPrefix(lines[i], "index ") {
		return nil, errors.New("missing index line")
	}
	index, err := strconv.ParseInt(strings.TrimPrefix(lines[i], "index "), 10, 64)
	if err != nil || index < 0 || strings.TrimPrefix(lines[i], "index ") != strconv.FormatInt(index, 10) {
		return nil, errors.New("bad index")
	}
	i++
	var proof tlog.RecordProof
	for ; i < len(lines) && lines[i] != ""; i++ {
		h, err := tlog.ParseHash(lines[i])
		if err != nil {
			return nil, fmt.Errorf("bad proof hash on line %d", i+1)
		}
		proof = append(proof, h)
	}
	if i >= len(lines) {
		return nil, errors.New("missing checkpoint")
	}
	cp := strings.Join(lines[i+1:], "\n")
	c, _, _, err := openCheckpoint([]byte(cp), vkeys)
	if err != nil {
		return nil, err
	}
	if entry == nil {
		entry = extra
	}
	if entry == nil {
		return nil, errors.New("no entry")
	}
	if err := tlog.CheckRecord(proof, c.Tree.N, c.Tree.Hash, index, tlog.RecordHash(entry)); err != nil {
		return nil, err
	}
	return result{"ok": true, "origin": c.Origin, "size": c.Tree.N, "index": index, "entry": string(entry)}, nil
}

func cmdOps(file string) {
	raw, err := os.ReadFile(file)
	if err != nil {
		die("%v", err)
	}
	var ops []op
	if err := json.Unmarshal(raw, &ops); err != nil {
		die("bad ops file: %v", err)
	}
	out := make([]result, len(ops))
	for i, o := range ops {
		out[i] = runOp(o)
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		die("%v", err)
	}
}

func cmdGenNote(name string) {
	text, err := io.ReadAll(os.Stdin)
	if err != nil {
		die("%v", err)
	}
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		die("%v", err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		die("%v", err)
	}
	msg, err := note.Sign(&note.Note{Text: string(text)}, s)
	if err != nil {
		die("%v", err)
	}
	json.NewEncoder(os.Stdout).Encode(map[string]string{"skey": skey, "vkey": vkey, "msg": string(msg)})
}

type memHashes []tlog.Hash

func (m memHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x >= int64(len(m)) {
			return nil, fmt.Errorf("index %d not stored", x)
		}
		out[i] = m[x]
	}
	return out, nil
}

func cmdTree(n int64) {
	var stored memHashes
	roots := []string{}
	for i := int64(0); i < n; i++ {
		hs, err := tlog.StoredHashes(i, []byte(fmt.Sprintf("record %d\n", i)), stored)
		if err != nil {
			die("%v", err)
		}
		stored = append(stored, hs...)
		h, err := tlog.TreeHash(i+1, stored)
		if err != nil {
			die("%v", err)
		}
		roots = append(roots, h.String())
	}
	strs := func(hs []tlog.Hash) []string {
		out := []string{}
		for _, h := range hs {
			out = append(out, h.String())
		}
		return out
	}
	records := [][]string{}
	for i := int64(0); i < n; i++ {
		p, err := tlog.ProveRecord(n, i, stored)
		if err != nil {
			die("%v", err)
		}
		records = append(records, strs(p))
	}
	trees := [][]string{}
	for m := int64(1); m <= n; m++ {
		p, err := tlog.ProveTree(n, m, stored)
		if err != nil {
			die("%v", err)
		}
		trees = append(trees, strs(p))
	}
	tiles := map[string]string{}
	for _, t := range tlog.NewTiles(tileHeight, 0, n) {
		d, err := tlog.ReadTileData(t, stored)
		if err != nil {
			die("%v", err)
		}
		tiles[c2spPath(t)] = b64(d)
	}
	json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"stored": strs(stored), "roots": roots, "record_proofs": records, "tree_proofs": trees, "tiles": tiles,
	})
}

func httpGet(base, path string) ([]byte, string, error) {
	req, err := http.NewRequest("GET", strings.TrimSuffix(base, "/")+"/"+path, nil)
	if err != nil {
		return nil, "", err
	}
	if tok := os.Getenv("TLOG_TOKEN"); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", err
	}
	if resp.StatusCode != 200 {
		return nil, "", fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return body, resp.Header.Get("Content-Type"), nil
}

func randInt(r *mrand.Rand, n int64) int64 { return r.Int63n(n) }

func cmdHTTP(base, vkey, oldFile string, samples int, seed int64, proofFile string) {
	out := result{}
	cpBytes, ctype, err := httpGet(base, "checkpoint")
	if err != nil {
		die("%v", err)
	}
	out["checkpoint_content_type"] = ctype
	cur, _, _, err := openCheckpoint(cpBytes, []string{vkey})
	if err != nil {
		die("checkpoint: %v", err)
	}
	out["origin"] = cur.Origin
	out["size"] = cur.Tree.N
	// The checkpoint saved last time ("-": none yet): the log must have grown from it.
	old := checkpoint{}
	if oldFile != "-" {
		oldRaw, err := os.ReadFile(oldFile)
		if err != nil {
			die("%v", err)
		}
		if old, _, _, err = openCheckpoint(oldRaw, []string{vkey}); err != nil {
			die("old checkpoint: %v", err)
		}
		if old.Origin != cur.Origin {
			die("origin changed: %q -> %q", old.Origin, cur.Origin)
		}
		if old.Tree.N > cur.Tree.N {
			die("the log's checkpoint (size %d) is older than the saved one (size %d): the log was rolled back", cur.Tree.N, old.Tree.N)
		}
		if old.Tree.N == cur.Tree.N && old.Tree.Hash != cur.Tree.Hash {
			die("the log's checkpoint and the saved one have the same size %d and different roots: the log was forked", cur.Tree.N)
		}
	}
	tr := &mapTiles{tiles: map[string][]byte{}, fetch: func(p string) ([]byte, error) {
		b, _, err := httpGet(base, p)
		return b, err
	}}
	r := mrand.New(mrand.NewSource(seed))
	idx := []int64{0, cur.Tree.N - 1}
	for len(idx) < samples {
		idx = append(idx, randInt(r, cur.Tree.N))
	}
	res := checkTiles(tr, cur.Tree, idx, old.Tree.N, &old.Tree.Hash)
	if res["ok"] != true {
		die("tiles: %v", res["err"])
	}
	out["records_checked"] = res["checked"]
	out["consistent_from"] = res["consistent_from"]
	out["tiles_fetched"] = len(tr.tiles)

	// The server's own proof endpoints, checked with tlog.
	var incl struct {
		Index int64    `json:"index"`
		Size  int64    `json:"size"`
		Proof []string `json:"proof"`
	}
	i := idx[len(idx)-1]
	b, _, err := httpGet(base, fmt.Sprintf("proof/inclusion?index=%d&size=%d", i, cur.Tree.N))
	if err != nil {
		die("%v", err)
	}
	if err := json.Unmarshal(b, &incl); err != nil {
		die("inclusion proof JSON: %v", err)
	}
	data, err := entryAt(tr, i, cur.Tree.N)
	if err != nil {
		die("%v", err)
	}
	if err := tlog.CheckRecord(hashes(incl.Proof), cur.Tree.N, cur.Tree.Hash, i, tlog.RecordHash(data)); err != nil {
		die("server inclusion proof for %d: %v", i, err)
	}
	if old.Tree.N > 0 {
		var cons struct {
			Proof []string `json:"proof"`
		}
		b, _, err = httpGet(base, fmt.Sprintf("proof/consistency?old=%d&new=%d", old.Tree.N, cur.Tree.N))
		if err != nil {
			die("%v", err)
		}
		if err := json.Unmarshal(b, &cons); err != nil {
			die("consistency proof JSON: %v", err)
		}
		if err := tlog.CheckTree(hashes(cons.Proof), cur.Tree.N, cur.Tree.Hash, old.Tree.N, old.Tree.Hash); err != nil {
			die("server consistency proof: %v", err)
		}
	}
	out["server_proofs"] = "ok"
	if proofFile != "" {
		raw, err := os.ReadFile(proofFile)
		if err != nil {
			die("%v", err)
		}
		pr, err := checkProofFile(raw, []string{vkey}, nil)
		if err != nil {
			die("proof file: %v", err)
		}
		out["proof_file"] = pr
	}
	json.NewEncoder(os.Stdout).Encode(out)
}

// cmdCheckpoint fetches the log's checkpoint, verifies it with the key and
// prints it (save it: the next `http` run checks the log grew from it).
func cmdCheckpoint(base, vkey string) {
	b, _, err := httpGet(base, "checkpoint")
	if err != nil {
		die("%v", err)
	}
	if _, _, _, err := openCheckpoint(b, []string{vkey}); err != nil {
		die("checkpoint: %v", err)
	}
	os.Stdout.Write(b)
}

func cmdProof(file, vkey, entryFile string) {
	raw, err := os.ReadFile(file)
	if err != nil {
		die("%v", err)
	}
	var entry []byte
	if entryFile != "" {
		if entry, err = os.ReadFile(entryFile); err != nil {
			die("%v", err)
		}
	}
	r, err := checkProofFile(raw, []string{vkey}, entry)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tlog-verify: %v\n", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(r)
}

func main() {
	if len(os.Args) < 2 {
		die("usage: tlog-verify ops|gen-note|tree|checkpoint|http|proof …")
	}
	a := os.Args[2:]
	switch os.Args[1] {
	case "ops":
		if len(a) != 1 {
			die("usage: tlog-verify ops FILE.json")
		}
		cmdOps(a[0])
	case "gen-note":
		if len(a) != 1 {
			die("usage: tlog-verify gen-note NAME")
		}
		cmdGenNote(a[0])
	case "tree":
		n, err := strconv.ParseInt(strings.TrimSpace(strings.Join(a, "")), 10, 64)
		if err != nil || n < 1 {
			die("usage: tlog-verify tree N")
		}
		cmdTree(n)
	case "http":
		if len(a) < 5 || len(a) > 6 {
			die("usage: tlog-verify http BASE_URL VKEY OLD_CHECKPOINT_FILE SAMPLES SEED [PROOF_FILE]")
		}
		samples, err1 := strconv.Atoi(a[3])
		seed, err2 := strconv.ParseInt(a[4], 10, 64)
		if err1 != nil || err2 != nil || samples < 2 {
			die("bad SAMPLES or SEED")
		}
		pf := ""
		if len(a) == 6 {
			pf = a[5]
		}
		cmdHTTP(a[0], a[1], a[2], samples, seed, pf)
	case "checkpoint":
		if len(a) != 2 {
			die("usage: tlog-verify checkpoint BASE_URL VKEY")
		}
		cmdCheckpoint(a[0], a[1])
	case "proof":
		if len(a) < 2 || len(a) > 3 {
			die("usage: tlog-verify proof FILE.tlog-proof VKEY [ENTRY_FILE]")
		}
		ef := ""
		if len(a) == 3 {
			ef = a[2]
		}
		cmdProof(a[0], a[1], ef)
	default:
		die("unknown command %q", os.Args[1])
	}
}
