-- grain: one row per (label_space, corruption, model)
-- keys: label_space, corruption, model
-- A reference model's top-1 error averaged over severities 1-5, the denominator of the corruption
-- error (CE); the row with corruption 'clean' holds its error on the clean set, the subtrahend of
-- relative CE. AlexNet on ImageNet-C, Hendrycks & Dietterich 2019,
-- measured on the released ImageNet-C files: views apply it to datasets of origin 'released' only.
create table if not exists corruption_reference (
    label_space varchar not null,
    corruption varchar not null,
    model varchar not null,
    mean_error double not null,
    primary key (label_space, corruption, model)
);
insert or ignore into corruption_reference values
    ('imagenet1k', 'clean', 'alexnet', 0.435),
    ('imagenet1k', 'gaussian_noise', 'alexnet', 0.886428),
    ('imagenet1k', 'shot_noise', 'alexnet', 0.894468),
    ('imagenet1k', 'impulse_noise', 'alexnet', 0.922640),
    ('imagenet1k', 'defocus_blur', 'alexnet', 0.819880),
    ('imagenet1k', 'glass_blur', 'alexnet', 0.826268),
    ('imagenet1k', 'motion_blur', 'alexnet', 0.785948),
    ('imagenet1k', 'zoom_blur', 'alexnet', 0.798360),
    ('imagenet1k', 'snow', 'alexnet', 0.866816),
    ('imagenet1k', 'frost', 'alexnet', 0.826572),
    ('imagenet1k', 'fog', 'alexnet', 0.819324),
    ('imagenet1k', 'brightness', 'alexnet', 0.564592),
    ('imagenet1k', 'contrast', 'alexnet', 0.853204),
    ('imagenet1k', 'elastic_transform', 'alexnet', 0.646056),
    ('imagenet1k', 'pixelate', 'alexnet', 0.717840),
    ('imagenet1k', 'jpeg_compression', 'alexnet', 0.606500);
