#!/usr/bin/env bash
# Installs the Debian packages some tests need, when this user may (root with apt-get).
# Never fails the build: without them, the tests that need them skip with a reason.
set -u
# Locales the PostgreSQL search tests make databases in (a Turkish one lower-cases I as a
# dotless ı, a German one is the control): generated where we may (root, with localedef
# and its sources from Debian's package locales).
for loc in tr_TR de_DE; do
  locale -a 2>/dev/null | grep -qix "${loc}.utf8" && continue
  if [ "$(id -u)" = 0 ] && command -v localedef >/dev/null 2>&1 \
      && localedef -i "$loc" -f UTF-8 "${loc}.UTF-8" >/dev/null 2>&1; then
    echo "system-deps: generated the locale ${loc}.UTF-8"
  else
    echo "system-deps: could not generate the locale ${loc}.UTF-8; tests needing it will skip"
  fi
done
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: not root with apt-get; tests needing ${need[*]} will skip"
  exit 0
fi
echo "system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
  || echo "system-deps: could not install ${need[*]}; tests needing them will skip"
exit 0
