"""ImageExampleGen's keys: its spec is FileBasedExampleGen's (TFX's standard
keys, `standard_component_specs`); these name the values it packs into the
`custom_config` Struct, written by component.py and read by the executor and
the driver."""

MAX_IMAGE_PIXELS_KEY = 'max_image_pixels'
MAX_FILE_BYTES_KEY = 'max_file_bytes'
FOLLOW_EXTERNAL_SYMLINKS_KEY = 'follow_external_symlinks'
UNLABELED_DIR_KEY = 'unlabeled_dir'
