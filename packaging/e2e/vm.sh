#!/bin/bash
# vm.sh — boot a throw-away Debian 12 (bookworm) with systemd as PID 1 under
# qemu and run one script in it as root.
#
# Usage:
#   packaging/e2e/vm.sh run SHARE_DIR SCRIPT [ARG...]
#       Boots the VM (building the image first if it is not cached), mounts
#       SHARE_DIR (a host directory, read-write) at /mnt/share over 9p, and
#       once multi-user.target is reached runs
#           cd /mnt/share && bash /mnt/share/SCRIPT ARG...
#       as root (SCRIPT is relative to SHARE_DIR). The script's stdout and
#       stderr stream to this terminal; vm.sh exits with the script's exit
#       code. The VM then powers off; every run starts from the pristine
#       image (qemu -snapshot), so runs never see each other's changes.
#       Exit codes of vm.sh itself: 124 = hard timeout (the VM is killed),
#       125 = the VM never reported an exit code (boot failure: the tail of
#       the console log is printed), 2 = the VM could not be built or
#       started (missing tools, no apt source, mmdebstrap failed).
#   packaging/e2e/vm.sh build     build (or find) the cached image; print its dir
#   packaging/e2e/vm.sh clean     delete every cached image
#
# Environment:
#   VM_TIMEOUT=900            hard limit in seconds for boot + script + poweroff
#   VM_MEM=2048 VM_CPUS=2     guest memory (MiB) and virtual CPUs
#   VM_EXTRA_PACKAGES="a b"   more Debian packages in the image (own cache key)
#   VM_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/edgeapp-vm   image cache
#   VM_CONSOLE=1              also stream the guest's serial console (kernel
#                             and systemd messages) to stderr
# The console log and the raw script output are kept in SHARE_DIR/.vm/.
#
# Inside the guest: /sys/fs/cgroup is pure cgroup v2 (cpu, io, memory, pids),
# so e.g. `systemd-run --pipe --wait -p Delegate=yes ./cgroup.test -test.v`
# works (--pipe: without it the output goes to the journal). There is no
# network but loopback. Dynamically linked host binaries (Go with cgo/-race)
# run, since host and guest are both bookworm. Boot to the script: ~20 s;
# first image build: ~2 min (then cached).
#
# Why it is built this way:
# - `-accel tcg`: /dev/kvm on these hosts is a paravirtual variant on which a
#   stock Debian kernel hangs; software emulation is slow but works.
# - The image is made by mmdebstrap from this machine's own apt sources and
#   cached, keyed by a hash of the package list, the sources and RECIPE.
# - A tiny busybox initramfs (virtio, ext4, 9p modules only) instead of
#   initramfs-tools' one keeps the boot to seconds.
# - Output and exit code come back over two virtio-serial ports, so they are
#   not mixed with console noise.
set -euo pipefail

# Bump when the way the image is made changes, to invalidate caches.
RECIPE=4
SUITE=bookworm
PACKAGES="systemd systemd-sysv dbus curl iproute2 procps linux-image-amd64 ca-certificates kmod less"
PACKAGES="$PACKAGES ${VM_EXTRA_PACKAGES:-}"
CACHE_ROOT=${VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeapp-vm}
VM_TIMEOUT=${VM_TIMEOUT:-900}
VM_MEM=${VM_MEM:-2048}
VM_CPUS=${VM_CPUS:-2}
# Modules the initramfs loads (with their dependencies) before switch_root.
INITRD_MODULES="virtio_pci virtio_blk virtio_console ext4 9p 9pnet_virtio virtio_rng"

log() { printf 'vm.sh: %s\n' "$*" >&2; }
die() { log "CANNOT RUN THE VM: $*"; exit 2; }

need_tools() {
	local missing=() t
	for t in mmdebstrap:mmdebstrap qemu-system-x86_64:qemu-system-x86 mkfs.ext4:e2fsprogs \
		cpio:cpio busybox:busybox-static modprobe:kmod; do
		command -v "${t%%:*}" >/dev/null 2>&1 || missing+=("${t#*:}")
	done
	# busybox must be static: it runs alone in the initramfs.
	if command -v busybox >/dev/null && ! file -L "$(command -v busybox)" 2>/dev/null | grep -q static; then
		dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
	fi
	command -v file >/dev/null || missing+=(file)
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing ${missing[*]} with apt-get"
		if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; then
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
				|| die "cannot install ${missing[*]}"
		fi
	fi
}

# The apt sources of this machine, as files mmdebstrap pastes into the guest.
apt_sources() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[ -s "$f" ] && grep -qs "$SUITE" "$f" && printf '%s\n' "$f"
	done
	return 0
}

image_key() {
	{
		echo "recipe=$RECIPE suite=$SUITE"
		# Sorted and de-duplicated, so word order does not matter.
		echo "$PACKAGES" | tr ' ' '\n' | sed '/^$/d' | sort -u
		apt_sources | while read -r f; do cat "$f"; done
	} | sha256sum | cut -c1-16
}

image_dir() { echo "$CACHE_ROOT/$(image_key)"; }

# Guest-side pieces, written into the root filesystem.
write_guest_files() {
	local root=$1
	echo edgeapp-vm >"$root/etc/hostname"
	printf '127.0.0.1 localhost\n127.0.1.1 edgeapp-vm\n::1 localhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
	printf '/dev/vda / ext4 rw,errors=remount-ro 0 0\n' >"$root/etc/fstab"
	mkdir -p "$root/mnt/share"
	# A fixed machine id: no first-boot logic, and -snapshot throws changes away.
	systemd-machine-id-setup --root="$root" >/dev/null 2>&1 || echo 0123456789abcdef0123456789abcdef >"$root/etc/machine-id"
	# Nothing interactive, nothing slow that the tests do not need.
	local u
	for u in systemd-firstboot.service getty@tty1.service serial-getty@ttyS0.service \
		apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
		man-db.timer systemd-timesyncd.service; do
		ln -sf /dev/null "$root/etc/systemd/system/$u"
	done
	# Local .debs are read by apt as root; say nothing about the _apt sandbox.
	echo 'APT::Sandbox::User "root";' >"$root/etc/apt/apt.conf.d/90edgeapp-vm"

	cat >"$root/usr/local/sbin/edgeapp-vm-run" <<'EOF'
#!/bin/bash
# Runs the script named on the kernel command line (edgeapp.script=) from the
# 9p share, streams its output to virtio port edgeapp.out, writes its exit code
# to edgeapp.rc, then powers the VM off.
out=/dev/virtio-ports/edgeapp.out rcport=/dev/virtio-ports/edgeapp.rc
for _ in $(seq 200); do [ -e "$out" ] && [ -e "$rcport" ] && break; sleep 0.1; done
[ -e "$out" ] || out=/dev/console
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^edgeapp\.$1=//p" | tail -n1; }
script=$(arg script) args=$(arg args) limit=$(arg timeout)
rc=0
{
	mkdir -p /mnt/share
	if ! mountpoint -q /mnt/share; then
		modprobe -q 9pnet_virtio; modprobe -q 9p
		mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none share /mnt/share || rc=125
	fi
	if [ "$rc" = 0 ]; then
		cd /mnt/share || rc=125
		# args are passed base64-encoded, NUL-separated, to survive the cmdline.
		mapfile -d '' argv < <(printf '%s' "$args" | base64 -d 2>/dev/null)
		export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
		timeout -k 10 "${limit:-3600}" bash "/mnt/share/$script" "${argv[@]}" </dev/null || rc=$?
	fi
} >"$out" 2>&1
echo "$rc" >"$rcport"
sync
systemctl poweroff --force --force
EOF
	chmod 755 "$root/usr/local/sbin/edgeapp-vm-run"
	cat >"$root/etc/systemd/system/edgeapp-vm-run.service" <<'EOF'
[Unit]
Description=edgeapp VM test script
After=multi-user.target
[Service]
# simple, not oneshot: boot must count as finished for `is-system-running --wait`.
Type=simple
ExecStart=/usr/local/sbin/edgeapp-vm-run
StandardOutput=journal+console
[Install]
WantedBy=multi-user.target
EOF
	mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
	ln -sf /etc/systemd/system/edgeapp-vm-run.service "$root/etc/systemd/system/multi-user.target.wants/edgeapp-vm-run.service"
}

make_initrd() {
	local root=$1 kver=$2 out=$3 t
	t=$(mktemp -d)
	mkdir -p "$t"/{bin,dev,proc,sys,newroot,lib/modules}
	cp "$(command -v busybox)" "$t/bin/busybox"
	: >"$t/modules"
	local m line path n=0
	for m in $INITRD_MODULES; do
		modprobe -d "$root" -S "$kver" --show-depends "$m" 2>/dev/null | while read -r line; do
			case $line in insmod\ *) ;; *) continue ;; esac
			path=${line#insmod }; path=${path%% *}
			echo "${path#"$root"}"
		done
	done | awk '!seen[$0]++' | while read -r path; do
		n=$((n + 1))
		local name; name=$(printf '%02d-%s' "$n" "$(basename "$path")")
		case $path in
		*.xz) xz -dc "$root$path" >"$t/lib/modules/${name%.xz}"; name=${name%.xz} ;;
		*.zst) zstd -qdc "$root$path" >"$t/lib/modules/${name%.zst}"; name=${name%.zst} ;;
		*) cp "$root$path" "$t/lib/modules/$name" ;;
		esac
		echo "$name" >>"$t/modules"
	done
	[ -s "$t/modules" ] || die "no kernel modules found for $kver in $root"
	cat >"$t/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules); do insmod /lib/modules/$m 2>/dev/null; done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
mount -t ext4 -o rw /dev/vda /newroot || { echo "initrd: cannot mount /dev/vda"; poweroff -f; }
umount /proc /sys; mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot /lib/systemd/systemd
EOF
	chmod 755 "$t/init"
	(cd "$t" && find . | cpio -o -H newc --quiet | gzip -1) >"$out.tmp"
	mv "$out.tmp" "$out"
	rm -rf "$t"
}

build_image() {
	need_tools
	local dir; dir=$(image_dir)
	[ -s "$dir/rootfs.img" ] && [ -s "$dir/vmlinuz" ] && [ -s "$dir/initrd.img" ] && { echo "$dir"; return 0; }
	mkdir -p "$CACHE_ROOT"
	exec 9>"$CACHE_ROOT/.lock"
	flock 9 # another run may be building the same image
	if [ -s "$dir/rootfs.img" ] && [ -s "$dir/vmlinuz" ] && [ -s "$dir/initrd.img" ]; then
		exec 9>&-; echo "$dir"; return 0
	fi
	local t0=$SECONDS sources=() f
	while read -r f; do sources+=("$f"); done < <(apt_sources)
	[ ${#sources[@]} -gt 0 ] || die "no apt source for $SUITE in /etc/apt: cannot build the image"
	log "building $SUITE image $(basename "$dir") (packages: $(echo $PACKAGES))"
	local tmp="$dir.tmp"
	rm -rf "$tmp"; mkdir -p "$tmp"
	local inc; inc=$(echo $PACKAGES | tr ' ' ',')
	mmdebstrap --quiet --variant=minbase --include="$inc" \
		--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		"$SUITE" "$tmp/root" "${sources[@]}" >&2 \
		|| die "mmdebstrap failed"
	write_guest_files "$tmp/root"
	local kver
	kver=$(ls "$tmp/root/lib/modules" | sort -V | tail -n1)
	[ -n "$kver" ] || die "no kernel installed in the image"
	cp "$tmp/root/boot/vmlinuz-$kver" "$tmp/vmlinuz"
	make_initrd "$tmp/root" "$kver" "$tmp/initrd.img"
	# Drop initramfs-tools' own image from the rootfs: it is not used.
	rm -f "$tmp/root/boot/initrd.img-"*
	local size_mb
	size_mb=$(( $(du -sm "$tmp/root" | cut -f1) + 2048 ))
	mkfs.ext4 -q -F -L root -d "$tmp/root" "$tmp/rootfs.img" "${size_mb}M" >&2 || die "mkfs.ext4 failed"
	rm -rf "$tmp/root"
	rm -rf "$dir"; mv "$tmp" "$dir"
	exec 9>&-
	log "image ready in $((SECONDS - t0)) s: $dir"
	echo "$dir"
}

run_vm() {
	[ $# -ge 2 ] || die "usage: vm.sh run SHARE_DIR SCRIPT [ARG...]"
	local share script
	share=$(cd "$1" && pwd) || die "no such directory: $1"
	script=$2; shift 2
	[ -f "$share/$script" ] || die "no script $script in $share"
	local dir; dir=$(build_image)
	local logs="$share/.vm"
	rm -rf "$logs"; mkdir -p "$logs"
	: >"$logs/out.log"; : >"$logs/rc"; : >"$logs/console.log"
	local args=""
	[ $# -gt 0 ] && args=$(printf '%s\0' "$@" | base64 -w0)
	local cmdline="root=/dev/vda rw console=ttyS0 panic=-1 quiet loglevel=4 systemd.show_status=0"
	cmdline="$cmdline edgeapp.script=$script edgeapp.timeout=$VM_TIMEOUT"
	[ -n "$args" ] && cmdline="$cmdline edgeapp.args=$args"
	local t0=$SECONDS
	log "booting (tcg, ${VM_CPUS} cpu, ${VM_MEM} MiB, timeout ${VM_TIMEOUT}s): $script $*"
	# setsid: the whole qemu process group can be killed on timeout/interrupt.
	setsid qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp "$VM_CPUS" -m "$VM_MEM" \
		-nographic -no-reboot -nodefaults \
		-kernel "$dir/vmlinuz" -initrd "$dir/initrd.img" -append "$cmdline" \
		-drive "file=$dir/rootfs.img,format=raw,if=virtio,snapshot=on" \
		-virtfs "local,path=$share,mount_tag=share,security_model=none,id=share" \
		-device virtio-rng-pci \
		-serial "file:$logs/console.log" \
		-device virtio-serial-pci \
		-chardev "file,id=out,path=$logs/out.log" -device virtserialport,chardev=out,name=edgeapp.out \
		-chardev "file,id=rc,path=$logs/rc" -device virtserialport,chardev=rc,name=edgeapp.rc \
		-monitor none </dev/null >"$logs/qemu.log" 2>&1 &
	local qpid=$!
	local tails=()
	tail -n +1 -f --pid="$qpid" "$logs/out.log" & tails+=($!)
	if [ "${VM_CONSOLE:-0}" = 1 ]; then
		tail -n +1 -f --pid="$qpid" "$logs/console.log" >&2 & tails+=($!)
	fi
	# shellcheck disable=SC2064
	trap "kill -9 -- -$qpid 2>/dev/null; kill ${tails[*]} 2>/dev/null" INT TERM
	local timed_out=0
	while kill -0 "$qpid" 2>/dev/null; do
		if [ $((SECONDS - t0)) -ge "$VM_TIMEOUT" ]; then
			timed_out=1
			log "hard timeout after ${VM_TIMEOUT}s: killing the VM"
			kill -9 -- "-$qpid" 2>/dev/null || kill -9 "$qpid" 2>/dev/null || true
			break
		fi
		sleep 0.5
	done
	wait "$qpid" 2>/dev/null || true
	wait "${tails[@]}" 2>/dev/null || true
	trap - INT TERM
	local rc; rc=$(tr -dc '0-9' <"$logs/rc")
	if [ "$timed_out" = 1 ]; then
		rc=124
	elif [ -z "$rc" ]; then
		log "the VM exited without reporting an exit code; last console lines:"
		tail -n 40 "$logs/console.log" | sed 's/\r$//' >&2
		sed 's/^/qemu: /' "$logs/qemu.log" >&2
		rc=125
	fi
	log "exit code $rc after $((SECONDS - t0)) s (logs in $logs)"
	return "$rc"
}

case ${1:-} in
run) shift; run_vm "$@" ;;
build) build_image ;;
clean) rm -rf "$CACHE_ROOT" ;;
*) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
esac
