package chunkindex

import (
	"crypto/sha256"
	"fmt"
	"io"
	"runtime"
	"sync"
)

// Copy reads an image from src until EOF, writes it to dst, and returns its
// index. Each buffer read from src is shared by three consumers that run
// concurrently: the sequential whole-image hash, the chunk hashers, and the
// sequential writer. The source is therefore read once, the bytes indexed
// are exactly the bytes written, and on two cores the copy costs little more
// than the two hash passes it overlaps with. Memory is bounded by a pool of
// buffers of chunkSize bytes.
func Copy(dst io.Writer, src io.Reader, chunkSize int64) (*Index, error) {
	cs, err := normChunkSize(chunkSize)
	if err != nil {
		return nil, err
	}
	const consumers = 3
	nbuf := 2*runtime.GOMAXPROCS(0) + 4
	type block struct {
		i    int
		buf  []byte
		refs sync.WaitGroup
	}
	pool := make(chan *block, nbuf)
	for range nbuf {
		pool <- &block{buf: make([]byte, cs)}
	}
	var (
		mu     sync.Mutex
		first  error
		stop   = make(chan struct{})
		sums   [][32]byte
		whole  = sha256.New()
		length int64
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = err
			close(stop)
		}
	}
	toWhole := make(chan *block, nbuf)
	toWrite := make(chan *block, nbuf)
	toHash := make(chan *block, nbuf)
	release := func(b *block) {
		b.refs.Done()
	}
	var wg sync.WaitGroup

	// Recycler: a block returns to the pool once all consumers are done.
	recycle := make(chan *block, nbuf)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for b := range recycle {
			b.refs.Wait()
			pool <- b
		}
	}()

	wg.Add(1)
	go func() { // whole-image hash, in order
		defer wg.Done()
		for b := range toWhole {
			whole.Write(b.buf)
			release(b)
		}
	}()
	wg.Add(1)
	go func() { // writer, in order
		defer wg.Done()
		failed := false
		for b := range toWrite {
			if !failed {
				if _, err := dst.Write(b.buf); err != nil {
					fail(fmt.Errorf("chunkindex: writing image: %w", err))
					failed = true
				}
			}
			release(b)
		}
	}()
	workers := runtime.GOMAXPROCS(0)
	var sumsMu sync.Mutex
	for range workers {
		wg.Add(1)
		go func() { // chunk hashes, any order
			defer wg.Done()
			for b := range toHash {
				s := sha256.Sum256(b.buf)
				sumsMu.Lock()
				for len(sums) <= b.i {
					sums = append(sums, [32]byte{})
				}
				sums[b.i] = s
				sumsMu.Unlock()
				release(b)
			}
		}()
	}

	// Producer: this goroutine reads.
	lengths := []int64{}
	for i := 0; ; i++ {
		var b *block
		select {
		case b = <-pool:
		case <-stop:
		}
		if b == nil {
			break
		}
		b.buf = b.buf[:cs]
		k, rerr := io.ReadFull(src, b.buf)
		if k > 0 {
			if i >= MaxChunks {
				fail(errTooManyChunks(cs))
				pool <- b
				break
			}
			b.i, b.buf = i, b.buf[:k]
			b.refs.Add(consumers)
			toWhole <- b
			toWrite <- b
			toHash <- b
			recycle <- b
			lengths = append(lengths, int64(k))
			length += int64(k)
		} else {
			pool <- b
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			fail(fmt.Errorf("chunkindex: reading image: %w", rerr))
			break
		}
	}
	close(toWhole)
	close(toWrite)
	close(toHash)
	close(recycle)
	wg.Wait()
	if first != nil {
		return nil, first
	}
	ix := &Index{ChunkSize: cs, ImageLength: length, Chunks: make([]Chunk, len(lengths))}
	var off int64
	for i, n := range lengths {
		ix.Chunks[i] = Chunk{Offset: off, Length: n, Hash: sums[i]}
		off += n
	}
	whole.Sum(ix.ImageHash[:0])
	return ix, nil
}
