"""Installable package for the GoogLeNet R-CNN detector (ILSVRC 2014 detection entry).

`pip install -e '.[test]'` installs the two packages `detector` and `proposals` with every runtime
dependency. torch/torchvision are given as ranges that admit the releases on this machine's disk
(torch 2.14.1, torchvision 0.29.1) so pip never downloads a multi-GB build.
"""
from setuptools import find_packages, setup

setup(
    name="googlenet-rcnn",
    version="0.1.0",
    description="The GoogLeNet ILSVRC 2014 detection entry: Selective Search + MultiBox proposals, "
    "GoogLeNet region classifiers, ILSVRC devkit-exact evaluation",
    packages=find_packages(include=["detector", "detector.*", "proposals", "proposals.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1,<=2.14.1",
        "torchvision>=0.16,<=0.29.1",
        "opencv-contrib-python-headless>=4.8",
        "pycocotools>=2.0.7",
        "scikit-image>=0.21",
        "numpy>=1.24",
        "scipy>=1.10",
        "PyYAML>=6.0",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "Pillow>=9.0",
        "numba>=0.59",  # the fused LRN kernel (detector/lrn_kernels.py)
    ],
    extras_require={
        "test": ["pytest>=7.0"],
        "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],
        # model.backend=mnn: the onnx backend's graph with its inception blocks run by MNN (detector/backends.py)
        "mnn": ["onnx>=1.15", "onnxruntime>=1.17", "MNN>=3.0"],
    },
)
