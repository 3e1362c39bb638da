# Sourced by the bench scripts that need a served repository: the
# offline ceremony against a running server, with generated keys and the
# server's online keys (docs/quickstart.md, by hand): an image repository
# whose product acme-gw has one release signer, and a director root the
# server accepts. Needs $R (the rampart binary) and the server
# environment (RAMPART_SERVER, RAMPART_CA, RAMPART_TOKEN); runs in the
# current directory.
ceremony() {
  "$R" server keys -o online > /dev/null
  for k in root targets rel; do "$R" key generate "keys/$k" --no-passphrase > /dev/null; done
  "$R" repo init repo --root-key keys/root.pub --targets-key keys/targets.pub \
    --snapshot-key online/snapshot.pub --timestamp-key online/timestamp.pub 2> /dev/null
  "$R" repo sign repo root --key keys/root.key --yes > /dev/null
  "$R" repo delegate repo acme-gw --key keys/rel.pub --threshold 1
  "$R" repo sign repo targets --key keys/targets.key --yes > /dev/null
  "$R" repo init director --root-key keys/root.pub --targets-key online/director-targets.pub \
    --snapshot-key online/director-snapshot.pub --timestamp-key online/director-timestamp.pub 2> /dev/null
  "$R" repo sign director root --key keys/root.key --yes > /dev/null
  "$R" director push-root director > /dev/null
}
