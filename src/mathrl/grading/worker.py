"""A grading child process: ``python -m mathrl.grading.worker FD [TIMEOUT]``: with a timeout, a
worker of :class:`mathrl.grading.grader.Grader`'s pool; without, the helper that bounds one
comparison off the main thread (:mod:`mathrl.grading.bounded`)."""

import sys

if __name__ == "__main__":
    if len(sys.argv) > 2:
        from mathrl.grading.grader import work

        work(int(sys.argv[1]), float(sys.argv[2]))
    else:
        from mathrl.grading.bounded import serve

        serve(int(sys.argv[1]))
