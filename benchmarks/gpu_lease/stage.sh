# Calls 2 and 3 (carry .dev/m1; then .dev/m2 and .dev/a1): copy each part out of the tree; once both model parts
# are there, put the model together and check it.
mkdir -p /tmp/dev/parts /tmp/dev/model /tmp/dev/a1
for part in m1 m2; do [ -d .dev/$part ] && cp .dev/$part/* /tmp/dev/parts/; done
[ -d .dev/a1 ] && cp .dev/a1/* /tmp/dev/a1/
if [ -f /tmp/dev/parts/model.bin.1 ] && [ -f /tmp/dev/parts/model.bin.2 ]; then
  cat /tmp/dev/parts/model.bin.1 /tmp/dev/parts/model.bin.2 > /tmp/dev/model/model.bin
  for f in /tmp/dev/parts/*; do case $f in *model.bin.*|*model.sha256) ;; *) cp "$f" /tmp/dev/model/ ;; esac; done
  echo "$(cat /tmp/dev/parts/model.sha256)  /tmp/dev/model/model.bin" | sha256sum -c || exit 1
fi
ls /tmp/dev/parts /tmp/dev/model
