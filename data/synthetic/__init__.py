"""Synthetic motion videos: the built-in, background-biased benchmark.

Each video shows one textured object moving over a natural-image background.
The class is the object's motion pattern (``MOTIONS``); the object's shape,
size, colours and texture are drawn per video and carry no class information.
With ``palette = n > 0`` the look (shape, colours, texture, orientation) is
instead one of ``n`` fixed looks shared by all classes, picked per video: still
independent of the class, but no longer a per-video fingerprint, so telling
two videos apart takes their motion (or their background).
Backgrounds are crops of images shipped with scikit-image, panned slowly with
sub-pixel steps and overlaid with per-frame sensor noise.

Background bias: each class owns a pool of background images. In a split with
correlation ``c``, ``round(c * n)`` of a class's ``n`` videos take their
background from the class's own pool; the rest cycle evenly through all pools
(own pool included). ``c = 1`` makes the background a perfect class cue;
``c = 0`` makes the pool independent of the class (with ``n`` a multiple of
``num_classes``, every pool appears equally often in every class).

Layout written under ``root``::

    videos/<split>/<class>/<class>_<split>_<index>.<ext>
    trainlist.txt, testlist.txt   file lists, paths relative to root, 0-based labels
    classInd.txt                  1-based class names
    annotations.json              per video: split, label, motion, pool, background,
                                  per-frame object boxes [x0, y0, x1, y1] (pixels, x1/y1 exclusive)
    spec.json                     the spec that produced the data (data.spec.SyntheticSpec;
                                  written last: marks completion)

Modules: ranges (what the draws range over), plan (which video goes where, with which
background), render (one video's frames and object boxes), dataset (writing and reading a dataset).
"""

from data.spec import MOTIONS, SyntheticSpec
from data.synthetic.dataset import (
    ANNOTATIONS_FILE,
    SPEC_FILE,
    NotSyntheticError,
    dataset_is_current,
    ensure_dataset,
    generate_dataset,
    load_annotations,
    load_boxes,
)
from data.synthetic.plan import VideoPlan, background_pools, plan_videos
from data.synthetic.render import draw_look, render_video

__all__ = ["ANNOTATIONS_FILE", "MOTIONS", "SPEC_FILE", "NotSyntheticError", "SyntheticSpec", "VideoPlan",
           "background_pools", "dataset_is_current", "draw_look", "ensure_dataset", "generate_dataset",
           "load_annotations", "load_boxes", "plan_videos", "render_video"]
