"""[`build_image_processor`]: the image processor saved beside a student or teacher, so raw images reach it
prepared exactly like the distilled set."""


def build_image_processor(mean: list[float], std: list[float], image_size: tuple[int, int], num_channels: int):
    """An image processor that turns raw images into the tensors a model trained on this data expects.

    Resize to `image_size` (bilinear), rescale by 1/255, normalise with `mean`/`std`; 3-channel data converts inputs
    to RGB. Saved as a `ViTImageProcessor`, so `AutoImageProcessor.from_pretrained(folder)` and the
    `image-classification` pipeline load it without hf_distill. Single-channel data expects mode `L` images (the
    processor cannot convert RGB to grayscale).
    """
    try:  # transformers 5: the PIL backend (always available); the torchvision one is chosen at load when installed
        from transformers import ViTImageProcessorPil as processor_class
    except ImportError:  # transformers 4: the PIL/NumPy processor
        from transformers import ViTImageProcessor as processor_class
    height, width = (int(s) for s in image_size)
    return processor_class(
        do_resize=True,
        size={"height": height, "width": width},
        resample=2,  # PIL bilinear
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[float(m) for m in mean],
        image_std=[float(s) for s in std],
        do_convert_rgb=num_channels == 3,
    )
