#!/usr/bin/env python3
# Rewrites sample.rbundle so that its image member is a PAX sparse file
# (GNU sparse format 0.1) claiming 1 GiB with 8000 bytes present. The
# output, sparse.rbundle, is a test vector: bundle readers must refuse it.
import io, tarfile
src = tarfile.open("sample.rbundle", "r:")
out = tarfile.open("sparse.rbundle", "w:", format=tarfile.PAX_FORMAT)
for m in src.getmembers():
    data = src.extractfile(m).read()
    if m.name == "image":
        m.pax_headers = {"GNU.sparse.size": str(1 << 30), "GNU.sparse.numblocks": "1", "GNU.sparse.map": "0,8000"}
    out.addfile(m, io.BytesIO(data))
out.close()
