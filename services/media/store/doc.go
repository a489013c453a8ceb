// Package store is where media bytes live: the raw tier (uploads as sent),
// the processed tier (what the media service made of them) and the cold
// tier (media nobody read for a while), behind one Store interface with
// two implementations.
//
// Local (--media-store local, the default) keeps each tier in a directory,
// {data}/media/{raw,processed,cold}. Every file is a small header (size,
// ETag, content type) followed by the object's bytes, written to a
// temporary file in the same directory, fsynced and renamed: one rename
// replaces data and metadata together, which a sidecar file could not
// promise after a crash. The ETag is the first 128 bits of the SHA-256 of
// the bytes in hex, computed while they stream in. Move renames across
// tier directories, keeping the modification time; when cold sits on
// another filesystem it copies and deletes instead. Temporary files are
// dot-named and invisible to List; one a crash leaves behind stays until
// someone removes it.
//
// S3 (--media-store s3) keeps each tier in a bucket through minio-go and
// creates missing buckets. Puts stream: a known size up to 5 GiB goes as
// one PUT, anything else multipart with one part in memory. Move is a
// server-side copy, checked, then a delete of the source. Cold is either
// its own bucket (--s3-cold-bucket, optionally with a storage class) or,
// with only --s3-cold-storage-class, an alias of the processed bucket
// whose objects a lifecycle rule moves to that class in place.
//
// The S3 store also implements the optional capabilities callers
// type-assert for: Presigner (direct uploads and downloads: one presigned
// PUT up to MultipartThreshold, presigned parts above it, see PlanParts),
// Notifier (MinIO's bucket notifications, so processing starts when a
// direct upload lands) and Lifecycle (the bucket rule that makes cold
// storage the store's job). Without Lifecycle — the local store, or S3
// without a storage class — the media service sweeps: it moves media not
// read for N days to the cold tier itself. A lifecycle rule counts days
// since an object was written, not since it was last read; that is what
// bucket rules can do.
//
// Keys are the service's, never a client's file names: ValidKey allows
// only [A-Za-z0-9._-/] in segments that do not start with '.', so a key
// is a safe relative path on every filesystem and leaves dot names to the
// stores. Counting bytes per tier is the service's job (List, Stat).
package store
