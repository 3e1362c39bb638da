package bootenv

import (
	"encoding/binary"
	"hash/crc32"
)

func binaryPutCRC(buf []byte, redundant bool) {
	binary.LittleEndian.PutUint32(buf, crc32.ChecksumIEEE(buf[headerLen(redundant):]))
}
