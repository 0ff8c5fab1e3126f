module e2e-images

go 1.22
