"""Entry point for `ray job submit`:

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/run_study.py jobs/examples/london.yaml store=s3://bucket/studies/london

Arguments are those of `citylens run` (a study YAML or `demo`, then key=value overrides).
Inside a job, RAY_ADDRESS is set, so the study joins the cluster that runs the job.
"""

import sys

from citylens.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]], own_process=True))
