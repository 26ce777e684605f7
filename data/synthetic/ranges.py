"""The ranges and choices the synthetic generator draws from (data.synthetic.render), and its
fixed random-stream ids (data.synthetic.plan, data.synthetic.render).

Fractions are of the frame, the free space in it or the object, as each comment says; colours
are HSV fractions; the stream ids are fixed: changing one changes every generated dataset.
"""

# scikit-image images that load without a download. Grayscale ones become RGB.
COLOUR_BACKGROUNDS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
                      "immunohistochemistry", "retina", "stereo_motorcycle")
GRAY_BACKGROUNDS = ("camera", "coins", "moon", "brick", "grass", "gravel", "clock")

GENERATED_PREFIX = "generated-"

# Generated backgrounds: smooth random colour fields, one per video; a pool is a hue
# family (pool k centred at k / num_classes on the colour wheel), so the pool stays a
# class cue while no two videos share a background.
GENERATED_HUE_SPREAD = 0.08          # hue varies by this much (fraction of the wheel) within a frame
GENERATED_HUE_JITTER = 0.04          # per-video shift of the pool's hue centre
GENERATED_BLOB_FRACTION = (0.08, 0.2)   # blob size, fraction of the canvas' shorter side
GENERATED_SATURATION = (0.3, 0.75)
GENERATED_VALUE = (0.3, 0.85)
GENERATED_DETAIL = 0.12              # fine texture amplitude (value units)
GENERATED_DETAIL_BLOB_DIVISOR = 6    # the fine texture's blobs are this many times smaller
# Smallest value range a smooth field is divided by when rescaled to 0..1 (a flat field stays flat).
FIELD_RANGE_FLOOR = 1e-6

PIXEL_MAX = 255.0

# Background crops: fraction of the largest crop that fits the image, and a cap on
# the working image size relative to the frame (keeps per-video resizing cheap).
CROP_FRACTION_RANGE = (0.35, 1.0)
WORKING_IMAGE_FRAME_RATIO = 3
BACKGROUND_GAIN_RANGE = (0.8, 1.2)
BACKGROUND_BIAS_RANGE = (-15.0, 15.0)
PAN_SPEED_FRACTION_RANGE = (0.4, 1.0)
MIRROR_PROBABILITY = 0.5

# Motion parameters (frames or fractions of the free space in the frame).
LINEAR_TRAVEL_RANGE = (0.6, 0.95)
ZIGZAG_TRAVEL_RANGE = (0.4, 0.75)
ZIGZAG_PERIOD_RANGE = (10.0, 16.0)
ZIGZAG_AMPLITUDE_RANGE = (0.5, 0.9)
CIRCLE_RADIUS_RANGE = (0.55, 0.95)
CIRCLE_PERIOD_RANGE = (20.0, 32.0)
PULSE_AMPLITUDE_RANGE = (0.25, 0.35)
PULSE_PERIOD_RANGE = (12.0, 20.0)

# Object look.
SHAPES = ("disk", "ellipse", "box")
TEXTURES = ("flat", "stripes", "checker", "rings")
ELLIPSE_ASPECT_RANGE = (0.5, 0.8)
TEXTURE_PERIOD_RANGE = (0.2, 0.45)  # fraction of the object size
SATURATION_RANGE = (0.6, 1.0)
VALUE_RANGE = (0.65, 1.0)
SECOND_VALUE_RANGE = (0.3, 0.9)
SECOND_HUE_OFFSET_RANGE = (0.25, 0.75)  # the texture's second colour sits across the colour wheel
SHADING_STRENGTH = 0.25
ALPHA_BOX_THRESHOLD = 0.5


# Random streams, each seeded [seed, stream id]; per-video draws use [seed, split, label, index].
# The ids are fixed: changing one changes every generated dataset.
POOL_STREAM = 8      # shuffles the background images into pools
PLAN_STREAM = 9      # assigns every video its background pool and image
PALETTE_STREAM = 97  # seeds the fixed looks of a palette apart from the per-video draws
LENGTH_STREAM = 10   # draws every video's length when the lengths spread
