"""Start seldon-core-microservice with the pod's annotations read from a file of our choosing.

    python seldon_launcher.py ANNOTATIONS_FILE [seldon-core-microservice arguments...]

In a pod, Seldon's operator mounts the SeldonDeployment's annotations as a downward-API volume at
/etc/podinfo (operator/apis/machinelearning.seldon.io/v1/seldondeployment_types.go: PODINFO_VOLUME_PATH),
and the wrapper reads them from that fixed path only (python/seldon_core/flask_utils.py:
ANNOTATIONS_FILE, read by python/seldon_core/microservice.py: load_annotations; seldon-core v1.17.1).
``seldon.io/rest-timeout`` there becomes gunicorn's worker timeout (microservice.py:
_make_rest_server_prod). Outside a pod this launcher points the wrapper at another file, so a
server started here runs under the same timeout as the pod; everything else is the real wrapper.
Runs under the server venv's python.
"""

from __future__ import annotations

import sys

from seldon_core import microservice


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: seldon_launcher.py ANNOTATIONS_FILE [seldon-core-microservice arguments...]")
    microservice.ANNOTATIONS_FILE = sys.argv[1]  # the name load_annotations() reads
    sys.argv = ["seldon-core-microservice", *sys.argv[2:]]
    microservice.main()


if __name__ == "__main__":
    main()
