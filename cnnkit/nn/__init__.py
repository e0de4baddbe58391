"""Neural-network building blocks: layers (forward and backward side by side), the model
built from an architecture spec, losses, optimisers and model files."""

from cnnkit.nn.layers import (
    Add,
    AvgPool2d,
    BatchNorm,
    Concat,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Layer,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    ReLU6,
    Sigmoid,
    Tanh,
)
from cnnkit.nn.losses import log_softmax, softmax, softmax_cross_entropy
from cnnkit.nn.model import Model, build_model
from cnnkit.nn.optim import SGD, Adam, make_optimizer, scheduled_lr
from cnnkit.nn.serialize import load_model, save_model

__all__ = [
    "SGD",
    "Adam",
    "Add",
    "AvgPool2d",
    "BatchNorm",
    "Concat",
    "Conv2d",
    "Dropout",
    "Flatten",
    "GlobalAvgPool",
    "Layer",
    "LeakyReLU",
    "Linear",
    "MaxPool2d",
    "Model",
    "ReLU",
    "ReLU6",
    "Sigmoid",
    "Tanh",
    "build_model",
    "load_model",
    "log_softmax",
    "make_optimizer",
    "save_model",
    "scheduled_lr",
    "softmax",
    "softmax_cross_entropy",
]
