package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/gif" // registers the GIF decoder with image.Decode
	"image/jpeg"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

const (
	// maxThumbnailSourcePixels refuses to decode images larger than 40 megapixels: a small file can declare
	// huge dimensions (a decompression bomb), and decoding allocates width × height × 4 bytes.
	maxThumbnailSourcePixels = 40_000_000
	// maxThumbnailSide caps the requested size; clients ask for at most 800 px.
	maxThumbnailSide = 1600
)

// Thumbnail returns a JPEG or PNG thumbnail of an image no larger than width × height ("scale": keep the aspect
// ratio, fit inside; "crop": fill the box and cut the overflow). Thumbnails are cached next to the original.
// A media item that is not a PNG, JPEG or GIF image gives mxerr.NotFound; an image already small enough is
// returned as it is.
func (s *Service) Thumbnail(ctx context.Context, serverName, mediaID string, width, height int, method string) (contentType string, data []byte, err error) {
	if width <= 0 || height <= 0 {
		return "", nil, mxerr.InvalidParam("width and height must be positive")
	}
	if method == "" {
		method = "scale"
	}
	if method != "scale" && method != "crop" {
		return "", nil, mxerr.InvalidParam("method must be scale or crop")
	}
	width, height = min(width, maxThumbnailSide), min(height, maxThumbnailSide)
	meta, f, err := s.Open(ctx, serverName, mediaID)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	switch meta.ContentType {
	case "image/png", "image/jpeg", "image/gif":
	default:
		return "", nil, mxerr.NotFound("no thumbnail for %s", meta.ContentType)
	}
	cache := filepath.Join(s.dir, mediaID+".thumb."+strconv.Itoa(width)+"x"+strconv.Itoa(height)+"."+method)
	if data, err := os.ReadFile(cache); err == nil && len(data) > 0 {
		return thumbType(meta.ContentType), data, nil
	}
	cfg, _, err := image.DecodeConfig(f)
	if err != nil || cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > maxThumbnailSourcePixels {
		return "", nil, mxerr.NotFound("no thumbnail for this image")
	}
	if cfg.Width <= width && cfg.Height <= height {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return "", nil, fmt.Errorf("rewind media: %w", err)
		}
		data, err := io.ReadAll(f)
		if err != nil {
			return "", nil, fmt.Errorf("read media: %w", err)
		}
		return meta.ContentType, data, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", nil, fmt.Errorf("rewind media: %w", err)
	}
	src, _, err := image.Decode(f)
	if err != nil {
		return "", nil, mxerr.NotFound("no thumbnail for this image")
	}
	dst := resize(src, width, height, method == "crop")
	var buf bytes.Buffer
	if thumbType(meta.ContentType) == "image/png" {
		err = png.Encode(&buf, dst)
	} else {
		err = jpeg.Encode(&buf, dst, &jpeg.Options{Quality: 85})
	}
	if err != nil {
		return "", nil, fmt.Errorf("encode thumbnail: %w", err)
	}
	if err := writeAtomic(cache, buf.Bytes()); err != nil && !errors.Is(err, os.ErrExist) {
		return "", nil, err
	}
	return thumbType(meta.ContentType), buf.Bytes(), nil
}

// thumbType keeps PNG (transparency) and turns the rest into JPEG (GIF thumbnails are still frames).
func thumbType(orig string) string {
	if orig == "image/png" {
		return "image/png"
	}
	return "image/jpeg"
}

func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".thumb-*")
	if err != nil {
		return fmt.Errorf("cache thumbnail: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("cache thumbnail: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("cache thumbnail: %w", err)
	}
	return os.Rename(tmp.Name(), path)
}

// resize scales src into a box of w × h with a box filter (the average of the source pixels each target
// pixel covers): good enough for thumbnails and free of dependencies. With crop the image fills the box and
// the overflow is cut evenly from both sides; otherwise it fits inside the box, keeping its aspect ratio.
func resize(src image.Image, w, h int, crop bool) image.Image {
	b := src.Bounds()
	sw, sh := b.Dx(), b.Dy()
	sx0, sy0, cw, ch := 0, 0, sw, sh
	if crop {
		// Cut the source to the box's aspect ratio.
		if sw*h > sh*w {
			cw = sh * w / h
			sx0 = (sw - cw) / 2
		} else {
			ch = sw * h / w
			sy0 = (sh - ch) / 2
		}
	} else {
		if sw*h > sh*w {
			h = max(1, sh*w/sw)
		} else {
			w = max(1, sw*h/sh)
		}
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		y0, y1 := sy0+y*ch/h, sy0+max((y+1)*ch/h, y*ch/h+1)
		for x := 0; x < w; x++ {
			x0, x1 := sx0+x*cw/w, sx0+max((x+1)*cw/w, x*cw/w+1)
			var r, g, bl, a, n uint64
			for yy := y0; yy < y1; yy++ {
				for xx := x0; xx < x1; xx++ {
					cr, cg, cb, ca := src.At(b.Min.X+xx, b.Min.Y+yy).RGBA()
					r, g, bl, a, n = r+uint64(cr), g+uint64(cg), bl+uint64(cb), a+uint64(ca), n+1
				}
			}
			dst.Set(x, y, color.RGBA64{R: uint16(r / n), G: uint16(g / n), B: uint16(bl / n), A: uint16(a / n)})
		}
	}
	return dst
}
