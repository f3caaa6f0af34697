"""Why LiteRT full int8 gives wrong descriptors: TFLite's quantization debugger, layer by layer.

Usage:
    python scripts/litert_int8_debug.py                                   # random VGG16 + NetVLAD(64), 96x128
    python scripts/litert_int8_debug.py --model runs/train/best.keras --calibration train.mat
    python scripts/litert_int8_debug.py --backbone tiny --height 48 --width 64 --top 10

Quantizes the whole graph (TFLite's full int8), compares every quantized op with the float
computation of the same op on the same inputs (the debugger's NumericVerify), and prints the layers
with the largest error in units of their own quantization step (a well quantized op shows about
0.29, the rounding error of one step), then the descriptor cosine to float of the full int8 graph
and of the backbone-only int8 that `sare-tf export --format litert --quantize int8` writes
(`sare_tf.evaluation.quantization.int8_layer_report`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile


def main(argv=None) -> int:
    import keras

    from sare_tf.artifacts.runtime_export import calibration_images
    from sare_tf.bench.extraction import calibration_jpegs
    from sare_tf.evaluation.quantization import int8_layer_report

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a .keras model (default: a random one)")
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--num-clusters", type=int, default=64)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--calibration", default=None, help="dataset whose db calibrates int8")
    parser.add_argument("--count", type=int, default=16, help="calibration images (default 16)")
    parser.add_argument("--top", type=int, default=8, help="layers to print (default 8)")
    args = parser.parse_args(argv)
    if args.model:
        from sare_tf.artifacts import load_descriptor_model

        loaded = load_descriptor_model(args.model)
        model, image_size = loaded.model, loaded.image_size
    else:
        from sare_tf.models import build_embedding_model

        keras.utils.set_random_seed(0)
        model = build_embedding_model(args.backbone, num_clusters=args.num_clusters)
        image_size = (args.height, args.width)
    with tempfile.TemporaryDirectory() as folder:
        if args.calibration:
            from sare_tf.data import GeoDataset

            paths = GeoDataset.load(args.calibration).db_image_paths()[: args.count]
        else:
            paths = calibration_jpegs(folder, args.count, *image_size)
        report = int8_layer_report(model, image_size, lambda: calibration_images(paths, image_size))
    print(f"{'op':20} {'error (steps)':>13} {'step':>10}  tensor")
    for layer in report["layers"][: args.top]:
        print(f"{layer['op']:20} {layer['error_in_steps']:13.3f} {layer['scale']:10.3g}  "
              f"{layer['tensor_name'][-90:]}")  # fmt: skip
    cosine = report["cosine"]
    print(f"descriptor cosine to float (min): full int8 {cosine['full_int8']:.5f}, "
          f"backbone int8 (what sare-tf exports) {cosine['backbone_int8']:.7f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
