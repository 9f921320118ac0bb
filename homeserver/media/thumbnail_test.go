package media

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"testing"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

func pngOf(t *testing.T, w, h int, fill func(x, y int) color.Color) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, fill(x, y))
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestThumbnail(t *testing.T) {
	s, _ := newService(t, "sqlite", 10<<20)
	ctx := t.Context()
	// 400×200: left half red, right half blue.
	src := pngOf(t, 400, 200, func(x, _ int) color.Color {
		if x < 200 {
			return color.RGBA{255, 0, 0, 255}
		}
		return color.RGBA{0, 0, 255, 255}
	})
	uri, err := s.Upload(ctx, "@u:example.org", "image/png", "wide.png", bytes.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name          string
		w, h          int
		method        string
		wantW, wantH  int
		leftRed, blue bool
	}{
		{"scale keeps aspect", 100, 100, "scale", 100, 50, true, true},
		{"crop fills the box", 100, 100, "crop", 100, 100, true, true},
		{"larger than source returns the original", 800, 800, "scale", 400, 200, true, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ct, data, err := s.Thumbnail(ctx, "example.org", uri.FileID, c.w, c.h, c.method)
			if err != nil || ct != "image/png" {
				t.Fatalf("thumbnail: %q %v", ct, err)
			}
			img, err := png.Decode(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			b := img.Bounds()
			if b.Dx() != c.wantW || b.Dy() != c.wantH {
				t.Fatalf("size %dx%d, want %dx%d", b.Dx(), b.Dy(), c.wantW, c.wantH)
			}
			r, _, _, _ := img.At(1, b.Dy()/2).RGBA()
			_, _, bl, _ := img.At(b.Dx()-2, b.Dy()/2).RGBA()
			if r < 0xf000 || bl < 0xf000 {
				t.Fatalf("colours not preserved: left red %x, right blue %x", r, bl)
			}
		})
	}
	// Cached: the second call gives the same bytes.
	_, a, _ := s.Thumbnail(ctx, "example.org", uri.FileID, 100, 100, "scale")
	_, b, _ := s.Thumbnail(ctx, "example.org", uri.FileID, 100, 100, "scale")
	if !bytes.Equal(a, b) {
		t.Fatal("cached thumbnail differs")
	}
	// JPEG sources give JPEG thumbnails.
	var jbuf bytes.Buffer
	_ = jpeg.Encode(&jbuf, image.NewRGBA(image.Rect(0, 0, 300, 300)), nil)
	juri, _ := s.Upload(ctx, "@u:example.org", "image/jpeg", "", bytes.NewReader(jbuf.Bytes()))
	if ct, _, err := s.Thumbnail(ctx, "example.org", juri.FileID, 32, 32, "crop"); err != nil || ct != "image/jpeg" {
		t.Fatalf("jpeg thumbnail: %q %v", ct, err)
	}
	// Refusals: not an image, a lying image, bad parameters.
	turi, _ := s.Upload(ctx, "@u:example.org", "text/plain", "", bytes.NewReader([]byte("hi")))
	fake, _ := s.Upload(ctx, "@u:example.org", "image/png", "", bytes.NewReader([]byte("not a png")))
	for _, c := range []struct {
		id, method string
		w          int
		want       error
	}{
		{turi.FileID, "scale", 32, mxerr.NotFound("")}, {fake.FileID, "scale", 32, mxerr.NotFound("")},
		{uri.FileID, "stretch", 32, mxerr.InvalidParam("")}, {uri.FileID, "scale", 0, mxerr.InvalidParam("")},
	} {
		if _, _, err := s.Thumbnail(ctx, "example.org", c.id, c.w, 32, c.method); !errors.Is(err, c.want) {
			t.Fatalf("Thumbnail(%s, %s, %d): %v, want %v", c.id, c.method, c.w, err, c.want)
		}
	}
}

// TestThumbnailRefusesDecompressionBomb: a tiny PNG that declares 100000×100000 pixels is refused before
// decoding.
func TestThumbnailRefusesDecompressionBomb(t *testing.T) {
	s, _ := newService(t, "sqlite", 10<<20)
	src := pngOf(t, 1, 1, func(int, int) color.Color { return color.White })
	// Patch the IHDR width and height (bytes 16..23) to 100000 each; DecodeConfig reads only the header.
	bomb := bytes.Clone(src)
	for i, v := range []byte{0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0} {
		bomb[16+i] = v
	}
	uri, _ := s.Upload(t.Context(), "@u:example.org", "image/png", "", bytes.NewReader(bomb))
	if _, _, err := s.Thumbnail(t.Context(), "example.org", uri.FileID, 64, 64, "scale"); !errors.Is(err, mxerr.NotFound("")) {
		t.Fatalf("bomb: %v", err)
	}
}
