#!/bin/sh
# kpiflow: runs the installed tree (PREFIX/lib/kpiflow) with Node; relocatable, so a DESTDIR
# staging copy runs as the installed one does.
here=$(dirname "$(readlink -f "$0")")
exec "${KPIFLOW_NODE:-@node@}" "$here/../lib/kpiflow/dist/cli/kpiflow.js" "$@"
