package wire

// MediaChunk is a piece of a media file that a region reads from the
// region the media came from (bridge/region media.go, services/media
// remote.go): Data is the bytes at the offset asked for; Size is the
// whole file's length; SHA256 (hex) is the whole file's checksum, given
// with the chunk at offset 0; MIME and ETag are the file's.
type MediaChunk struct {
	Size   int64
	SHA256 string
	MIME   string
	ETag   string
	Data   []byte
}
