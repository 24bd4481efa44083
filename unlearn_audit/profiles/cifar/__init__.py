"""The `cifar10-resnet18` profile: CIFAR-10 (python batches or an imported image-folder tree),
its stand-in, ResNet-18."""
