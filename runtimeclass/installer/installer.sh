#!/bin/sh
# The moat node installer's main process (installer/daemonset.yaml runs it in the installer
# image): install moat on this node, label the node, wait; on SIGTERM (the pod is being deleted)
# take the label off and uninstall. The node's /usr/local, /etc/moat and /etc/containerd are
# mounted at the same paths, and the pod shares the node's PID namespace (for the containerd
# restart through systemd).
set -eu

: "${NODE_NAME:?NODE_NAME must name this node (the DaemonSet sets it from spec.nodeName)}"
export PATH=/opt/moat/bin:/usr/bin:/bin:/usr/sbin:/sbin
label=moat.dev/runtime

uninstall() {
  echo "moat-installer: removing moat from node $NODE_NAME"
  kubectl label node "$NODE_NAME" "$label-" ||
    echo "moat-installer: could not remove the $label label: remove it by hand" >&2
  if ! moat uninstall --restart-containerd; then
    echo "moat-installer: moat uninstall failed (see above)" >&2
    exit 1
  fi
  exit 0
}
trap uninstall TERM INT

moat install --restart-containerd
kubectl label --overwrite node "$NODE_NAME" "$label=true"
echo "moat-installer: node $NODE_NAME is labelled $label=true"

# Wait for SIGTERM; `sleep & wait` lets the trap run as soon as it arrives.
while :; do
  sleep 3600 &
  wait $! || true
done
