#!/usr/bin/env bash
# Demo: `--digest-metadata copy` above S3's 5 GiB CopyObject limit.
# Copies one SIZE_GIB (default 6) file of random bytes into Garage twice
# with the shipped binary (release, `-p ferry` alone):
#   1. --digest-metadata auto (the default): one write, no digest metadata;
#   2. --digest-metadata copy: after the upload, a server-side self-copy
#      that puts the verified sha256/md5 on the object; above 5 GiB it is a
#      multipart copy (UploadPartCopy of ranges of at most 5 GiB).
# Evidence comes from the server, not from ferry: HeadObject (aws-cli) shows
# the size, the ETag (its `-N` suffix is the number of parts of the upload
# that made the object: the 5 GiB ranges of the copy give `-2` for 6 GiB)
# and the metadata, compared with `sha256sum` of the file.
#
# Usage: bench/digest-copy.sh [SIZE_GIB]     Env: FERRY_BENCH_DIR (scratch)
set -euo pipefail
cd "$(dirname "$0")/.."
gib="${1:-6}"
scratch="${FERRY_BENCH_DIR:-$(mktemp -d)}"
unset AWS_CA_BUNDLE
cargo build --release --locked -p ferry >&2
ferry="${CARGO_TARGET_DIR:-target}/release/ferry"
eval "$(scripts/garage.sh start)"
bucket=ferry-bench
file="$scratch/digest-demo.bin"
[ -f "$file" ] || head -c "$((gib * 1024 * 1024 * 1024))" /dev/urandom > "$file"
sha=$(sha256sum "$file" | cut -d' ' -f1)
echo "file: $gib GiB, random bytes, sha256sum $sha; $("$ferry" --version); Garage $(garage --version | awk '{print $2}'); $(date -u +%Y-%m-%dT%H:%MZ)"
head_object() {
  aws s3api head-object --bucket "$bucket" --key "$1" --endpoint-url "$AWS_ENDPOINT_URL" --region "$AWS_REGION" \
    --query '{size: ContentLength, etag: ETag, metadata: Metadata}' --output json | tr -d ' \n'
  echo
}
for mode in auto copy; do
  key="digest-demo/$mode-$(date +%s).bin"
  start=$(date +%s.%N)
  "$ferry" copy "$file" "s3://$bucket/$key" --digest-metadata "$mode" --json > "$scratch/$mode.json"
  end=$(date +%s.%N)
  printf 'mode %-4s: ferry exit 0 in %.1f s; HeadObject: ' "$mode" "$(echo "$end - $start" | bc -l)"
  head=$(head_object "$key")
  echo "$head"
  case $mode in
    auto) grep -q '"sha256"' <<<"$head" && { echo "FAIL: auto wrote digest metadata"; exit 1; } ;;
    copy)
      grep -q "\"sha256\":\"$sha\"" <<<"$head" || { echo "FAIL: the object's sha256 metadata is not sha256sum's"; exit 1; }
      echo "  the object's sha256 metadata equals sha256sum of the file" ;;
  esac
  aws s3 rm "s3://$bucket/$key" --endpoint-url "$AWS_ENDPOINT_URL" --region "$AWS_REGION" --only-show-errors
done
[ -n "${FERRY_BENCH_DIR:-}" ] || rm -rf "$scratch"
