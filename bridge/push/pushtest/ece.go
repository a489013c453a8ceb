package pushtest

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// DecryptWebPush decrypts an RFC 8291 Web Push message body (RFC 8188
// aes128gcm content coding) as a browser does, with its P-256 private
// key ua and its 16-byte auth secret. Every record is decrypted; the
// padding is checked and removed.
func DecryptWebPush(body []byte, ua *ecdh.PrivateKey, authSecret []byte) ([]byte, error) {
	// Header: salt (16) | rs (4) | idlen (1) | keyid (idlen): the keyid is
	// the application server's ephemeral public key.
	if len(body) < 21 {
		return nil, errors.New("aes128gcm: short header")
	}
	salt := body[:16]
	rs := binary.BigEndian.Uint32(body[16:20])
	idlen := int(body[20])
	if rs < 18 {
		return nil, fmt.Errorf("aes128gcm: record size %d", rs)
	}
	if len(body) < 21+idlen {
		return nil, errors.New("aes128gcm: short key id")
	}
	asPub, err := ecdh.P256().NewPublicKey(body[21 : 21+idlen])
	if err != nil {
		return nil, fmt.Errorf("aes128gcm: key id is not a P-256 public key: %w", err)
	}
	records := body[21+idlen:]
	if len(records) == 0 {
		return nil, errors.New("aes128gcm: no records")
	}

	// RFC 8291 section 3.4: the input keying material from the ECDH
	// secret and the auth secret.
	secret, err := ua.ECDH(asPub)
	if err != nil {
		return nil, fmt.Errorf("aes128gcm: ECDH: %w", err)
	}
	info := append([]byte("WebPush: info\x00"), ua.PublicKey().Bytes()...)
	info = append(info, asPub.Bytes()...)
	ikm, err := hkdf.Key(sha256.New, secret, authSecret, string(info), 32)
	if err != nil {
		return nil, err
	}
	// RFC 8188 section 2.2 and 2.3: the content encryption key and the
	// nonce base.
	cek, err := hkdf.Key(sha256.New, ikm, salt, "Content-Encoding: aes128gcm\x00", 16)
	if err != nil {
		return nil, err
	}
	nonceBase, err := hkdf.Key(sha256.New, ikm, salt, "Content-Encoding: nonce\x00", 12)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}

	var out []byte
	for seq := uint64(0); len(records) > 0; seq++ {
		n := int(min(uint64(rs), uint64(len(records))))
		rec := records[:n]
		records = records[n:]
		nonce := bytes.Clone(nonceBase)
		var ctr [8]byte
		binary.BigEndian.PutUint64(ctr[:], seq)
		for i := range 8 {
			nonce[4+i] ^= ctr[i]
		}
		plain, err := gcm.Open(nil, nonce, rec, nil)
		if err != nil {
			return nil, fmt.Errorf("aes128gcm: record %d: %w", seq, err)
		}
		// Padding: the data, a delimiter (2 in the last record, 1 before),
		// then zeros.
		i := len(plain) - 1
		for i >= 0 && plain[i] == 0 {
			i--
		}
		if i < 0 {
			return nil, fmt.Errorf("aes128gcm: record %d has no delimiter", seq)
		}
		last := len(records) == 0
		switch {
		case last && plain[i] != 2:
			return nil, fmt.Errorf("aes128gcm: last record %d ends in %d, want 2", seq, plain[i])
		case !last && plain[i] != 1:
			return nil, fmt.Errorf("aes128gcm: record %d ends in %d, want 1", seq, plain[i])
		}
		out = append(out, plain[:i]...)
	}
	return out, nil
}
