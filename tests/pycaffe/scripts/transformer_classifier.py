"""caffe.io image loading and Transformer preprocessing, then caffe.Classifier with 10-crop
oversampling and centre crops, checked against the same steps written out in NumPy."""
import numpy as np
from PIL import Image

import caffe

with open("deploy.prototxt", "w") as f:
    f.write('''name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 10 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 stride: 2 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"
  inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
''')
caffe.set_random_seed(5)
caffe.Net("deploy.prototxt", caffe.TEST).save("tiny.caffemodel")

rng = np.random.RandomState(0)
pixels = rng.randint(0, 256, size=(12, 14, 3)).astype(np.uint8)
Image.fromarray(pixels).save("image.png")
image = caffe.io.load_image("image.png")
assert image.dtype == np.float32 and image.shape == (12, 14, 3)
np.testing.assert_allclose(image, pixels / 255.0, rtol=1e-6)
gray = caffe.io.load_image("image.png", color=False)
assert gray.shape == (12, 14, 1)
np.testing.assert_allclose(gray[..., 0], pixels / 255.0 @ [0.2125, 0.7154, 0.0721], rtol=1e-5)

mean = np.array([104.0, 117.0, 123.0], np.float32)
net = caffe.Net("deploy.prototxt", caffe.TEST, weights="tiny.caffemodel")
transformer = caffe.io.Transformer({"data": net.blobs["data"].data.shape})
transformer.set_transpose("data", (2, 0, 1))
transformer.set_channel_swap("data", (2, 1, 0))
transformer.set_raw_scale("data", 255)
transformer.set_mean("data", mean)
transformer.set_input_scale("data", 0.5)
crop = image[2:10, 3:11]
ready = transformer.preprocess("data", crop)
expected = (crop[:, :, ::-1].transpose(2, 0, 1) * 255 - mean[:, None, None]) * 0.5
np.testing.assert_allclose(ready, expected, rtol=1e-5, atol=1e-4)
np.testing.assert_allclose(transformer.deprocess("data", ready), crop, atol=1e-5)
resized = transformer.preprocess("data", image)          # 12 x 14 -> 8 x 8 first
assert resized.shape == (3, 8, 8)
np.testing.assert_allclose(
    resized, (caffe.io.resize_image(image, (8, 8))[:, :, ::-1].transpose(2, 0, 1) * 255
              - mean[:, None, None]) * 0.5, rtol=1e-5, atol=1e-4)

classifier = caffe.Classifier("deploy.prototxt", "tiny.caffemodel", image_dims=(10, 10),
                              mean=mean, raw_scale=255, channel_swap=(2, 1, 0))
assert classifier.inputs == ["data"] and classifier.outputs == ["prob"]
scaled = caffe.io.resize_image(image, (10, 10))
crops = caffe.io.oversample([scaled], (8, 8))
assert crops.shape == (10, 8, 8, 3)
np.testing.assert_array_equal(crops[0], scaled[:8, :8])
np.testing.assert_array_equal(crops[3], scaled[2:, 2:])
np.testing.assert_array_equal(crops[4], scaled[1:9, 1:9])
np.testing.assert_array_equal(crops[5], scaled[:8, :8][:, ::-1])
batch = np.stack([(c[:, :, ::-1].transpose(2, 0, 1) * 255 - mean[:, None, None])
                  for c in crops])
by_hand = net.forward(data=batch)["prob"].mean(0)
prediction = classifier.predict([image])
assert prediction.shape == (1, 6)
np.testing.assert_allclose(prediction[0], by_hand, rtol=1e-5, atol=1e-7)

centre = classifier.predict([image, image[::-1]], oversample=False)
assert centre.shape == (2, 6)
np.testing.assert_allclose(centre[0], net.forward(data=batch[[4] * 10])["prob"][0],
                           rtol=1e-5, atol=1e-7)
np.testing.assert_allclose(centre.sum(1), 1, rtol=1e-5)
print("OK")
