"""The leaderboard: published results beside reproduced ones (``suite leaderboard ...``).

* ``published``  — the papers' numbers, one record per printed cell (leaderboard/published/*.yaml);
* ``entries``    — finished MLflow runs aggregated per (defense, dataset, backbone, profile), one JSON each;
* ``compare`` / ``tolerance`` — which published values a reproduced number is compared with, and its
  status under the versioned policy in ``tolerances.yaml``;
* ``html`` / ``show`` / ``cli`` — the static site, terminal tables and the command line.
"""
