module github.com/apikey-operator/apikey-operator/pkg/apikeyauth

go 1.26.0
